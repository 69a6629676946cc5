//! One field of the broker's line files in the data directory (the topic registry, the
//! dynamic broker configs, the group configs): fields are separated by spaces, so a value is
//! written with every byte that is not a printable, non-`%` ASCII character as `%XX`, and an
//! empty value as `%00%` so that it is still one field.

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() {
        // An empty value must still be one field.
        out.push_str("%00%");
    }
    out
}

pub(crate) fn unescape(s: &str) -> Option<String> {
    if s == "%00%" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
