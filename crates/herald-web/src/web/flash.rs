//! The flash message: a one-shot text carried by a cookie to the next page (after a form's
//! redirect). Its own module so that rendering (which clears it) and the session (which
//! reads it) both depend on it and not on each other.

use axum::http::{HeaderMap, HeaderValue, header};

/// The cookie that carries a one-shot message to the next page.
pub const FLASH_COOKIE: &str = "herald_flash";

/// The Set-Cookie value carrying `value` (already encoded) for `max_age` seconds.
pub(super) fn flash_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{FLASH_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// Adds the header that clears a consumed flash message.
pub fn clear_flash(headers: &mut HeaderMap, secure: bool) {
    if let Ok(v) = HeaderValue::from_str(&flash_cookie("", 0, secure)) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Percent-encodes everything but ASCII letters and digits (a cookie value must not hold
/// spaces, commas, semicolons or quotes).
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes().take(600) {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
