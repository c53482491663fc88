//! Herald's provider requests checked against the vendors' OpenAPI specs: Prism in proxy
//! mode (`--errors`) sits between Herald and the fakes, validates every request (and the
//! fake's response) and turns any violation into an error it logs. The test then reads
//! Prism's log: every send must have been forwarded, and nothing may have been flagged.
//! The specs and their sources: `tests/contracts/README.md`.

use crate::harness::{
    ACCOUNT_SID, AUTH_TOKEN, Guard, TWILIO_FROM, campaign, contracts_dir, create_channel,
    free_port, import, phones, prism_bin, serve, with_secret_key,
};
use crate::support::{Backend, Herald, accepted, n};
use crate::whatsapp::{fake_whatsapp, whatsapp_channel};
use herald::ids::ChannelId;
use std::process::Command;
use std::time::Duration;

/// `prism proxy --errors SPEC UPSTREAM` on a free loopback port; returns the guard and
/// the proxy's base URL once Prism listens.
fn prism_proxy(h: &Herald, name: &str, spec: &std::path::Path, upstream: &str) -> (Guard, String) {
    let port = free_port();
    let mut cmd = Command::new(prism_bin());
    cmd.args([
        "proxy",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--errors",
    ])
    .arg(spec)
    .arg(upstream)
    .env("SCARF_ANALYTICS", "false")
    .env("NO_COLOR", "1")
    .current_dir(h.dir.path());
    let guard = Guard::spawn(cmd, name, h.path(&format!("{name}.log")));
    (guard, format!("http://127.0.0.1:{port}"))
}

/// Prism's log after its start-up listing: what it did with the requests.
fn traffic(proxy: &Guard) -> Vec<String> {
    let text = proxy.log_text();
    let start = text
        .find("Prism is listening on")
        .unwrap_or_else(|| panic!("{} never started\n{}", proxy.name, proxy.log_tail(20)));
    text[start..].lines().skip(1).map(str::to_string).collect()
}

/// Every request forwarded, none flagged.
fn assert_clean(proxy: &Guard, sends: usize) {
    let lines = traffic(proxy);
    let forwarded = lines.iter().filter(|l| l.contains("Forwarding")).count();
    let flagged: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("Violation") || l.contains("terminated with error") || l.contains('✖')
        })
        .collect();
    assert!(
        flagged.is_empty(),
        "{} flagged Herald's requests or the fake's answers:\n{}",
        proxy.name,
        flagged
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        forwarded,
        sends,
        "{} forwarded a different number of requests than Herald sent\n{}",
        proxy.name,
        proxy.log_tail(30)
    );
}

/// The WhatsApp spec with `biz_opaque_callback_data` added to the message properties:
/// Meta documents the field on sends (README §2.1) but `business-messaging-api_v23.0.yaml`
/// defines it only for calls, and its `additionalProperties: false` would flag every
/// message Herald sends. Nothing else is changed.
fn whatsapp_spec(h: &Herald) -> std::path::PathBuf {
    let original = contracts_dir().join("business-messaging-api_v23.0.yaml");
    let text = std::fs::read_to_string(&original)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", original.display()));
    let anchor = "        context:\n          $ref: '#/components/schemas/MessageContext'\n    MessageContext:\n";
    assert_eq!(
        text.matches(anchor).count(),
        1,
        "BaseMessageProperties changed shape in {}",
        original.display()
    );
    let patched = text.replace(
        anchor,
        "        context:\n          $ref: '#/components/schemas/MessageContext'\n        \
         biz_opaque_callback_data:\n          type: string\n          maxLength: 512\n    MessageContext:\n",
    );
    let path = h.path("business-messaging-api_v23.0+biz_opaque.yaml");
    std::fs::write(&path, patched).expect("write the patched spec");
    path
}

pub fn requests_match_the_openapi_specs(backend: Backend) {
    let mut h = Herald::migrated(backend);
    with_secret_key(&mut h);
    let port = free_port();
    let wa_fake_port = free_port();

    // Channels first: the WhatsApp fake needs the channel id for its webhook URL.
    let twilio_fake = crate::harness::Fake::start(
        &h,
        &[
            "twilio",
            "--listen",
            "127.0.0.1:0",
            "--auth-token",
            AUTH_TOKEN,
            "--callback-delay-ms",
            "20",
        ],
    );
    let (mut twilio_proxy, twilio_url) = prism_proxy(
        &h,
        "prism-twilio",
        &contracts_dir().join("twilio_api_v2010.json"),
        &twilio_fake.base,
    );
    let wa_spec = whatsapp_spec(&h);
    let wa_upstream = format!("http://127.0.0.1:{wa_fake_port}");
    let (mut wa_proxy, wa_url) = prism_proxy(&h, "prism-whatsapp", &wa_spec, &wa_upstream);

    create_channel(
        &h,
        &[
            "--name",
            "sms",
            "--kind",
            "twilio",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
            "--from",
            TWILIO_FROM,
            "--base-url",
            &twilio_url,
        ],
    );
    let text_channel = whatsapp_channel(&h, "wa-text", &wa_url, &[]);
    whatsapp_channel(
        &h,
        "wa-template",
        &wa_url,
        &["--template", "order_update", "--template-language", "en_US"],
    );
    let wa_fake = fake_whatsapp(&h, wa_fake_port, port, ChannelId(text_channel));
    let serve = serve(&h, port, true);

    const SMS: usize = 8;
    const WA: usize = 4;
    import(&h, "sms", &phones(5, SMS));
    import(&h, "wa", &phones(6, WA));
    // Prism reads a 1.8 MB spec: give it time, but never without bound.
    twilio_proxy.wait_log("Prism is listening on", Duration::from_secs(90));
    wa_proxy.wait_log("Prism is listening on", Duration::from_secs(90));

    let sms = campaign(&h, "sms", "sms", "sms", "Hi {{ name }} & co: 100% ok?");
    let text = campaign(&h, "text", "wa", "wa-text", "Hi {{ name }}, see you!");
    let template = campaign(&h, "template", "wa", "wa-template", "{{ name }}\nFriday");
    for id in [sms, text, template] {
        h.ok(&["campaign", "start", &id.to_string()]);
    }
    let done: Vec<_> = [(sms, SMS), (text, WA), (template, WA)]
        .into_iter()
        .map(|(id, size)| (h.wait_completed(id, &[&serve]), size))
        .collect();
    // What Prism flagged first: a rejected request also fails its message.
    assert_clean(&twilio_proxy, SMS);
    assert_clean(&wa_proxy, 2 * WA);
    for (s, size) in done {
        assert_eq!(
            accepted(&s),
            size as i64,
            "every message went through the proxy: {s}"
        );
        assert_eq!(n(&s, "failed"), 0, "{s}");
    }
    assert_eq!(twilio_fake.stats()["received"].as_i64(), Some(SMS as i64));
    assert_eq!(wa_fake.stats()["received"].as_i64(), Some(2 * WA as i64));
    drop(serve);
}
