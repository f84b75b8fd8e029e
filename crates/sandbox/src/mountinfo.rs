//! Reading `/proc/self/mountinfo` fields.

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`) in one field.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn octal_escapes() {
        assert_eq!(super::unescape(r"/a\040b\011c\134d"), b"/a b\tc\\d");
        assert_eq!(super::unescape(r"/plain\9"), b"/plain\\9");
    }
}
