//! Recovery from instances that died: the instances and their heartbeats, and the messages
//! in doubt they left behind.

mod in_doubt;
mod instances;
