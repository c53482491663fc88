//! The directory: organisations, and their lists, contacts and suppressions.

mod admin;
pub(super) mod contacts;
mod lists;
mod organisations;
pub(super) mod segments;

pub(super) use admin::bounded_contact_fields;
pub use admin::like_pattern;
pub use admin::{
    Attributes, ContactChange, ContactFilter, ContactRow, ListDeletion, ListRow, NewContact,
    OrgRow, SuppressionRow,
};
pub(super) use admin::{Bind, query_with};
