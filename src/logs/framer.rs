//! STAND-IN (replaced by the real framer): splits a byte stream into lines.
pub const MAX_LINE: usize = 4 * 1024 * 1024;
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
}
impl Framer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.buf.is_empty() {
                emit(&rest[..i], false);
            } else {
                self.buf.extend_from_slice(&rest[..i]);
                emit(&self.buf, false);
                self.buf.clear();
            }
            rest = &rest[i + 1..];
        }
        self.buf.extend_from_slice(rest);
    }
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, false);
            self.buf.clear();
        }
    }
}
