//! A `multipart/form-data` body, built in memory (code packages are small).

#[derive(Default)]
pub struct Multipart {
    parts: Vec<Part>,
}

struct Part {
    name: String,
    file_name: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart::default()
    }

    pub fn text(mut self, name: &str, content_type: &str, body: Vec<u8>) -> Multipart {
        self.parts.push(Part {
            name: name.to_owned(),
            file_name: None,
            content_type: content_type.to_owned(),
            body,
        });
        self
    }

    pub fn file(
        mut self,
        name: &str,
        file_name: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Multipart {
        self.parts.push(Part {
            name: name.to_owned(),
            file_name: Some(file_name.to_owned()),
            content_type: content_type.to_owned(),
            body,
        });
        self
    }

    /// The `Content-Type` header and the body. The boundary is chosen so
    /// that no part contains it.
    pub fn finish(self) -> (String, Vec<u8>) {
        let mut attempt = 0u32;
        let boundary = loop {
            let candidate = format!(
                "berth-boundary-{:x}-{:x}-{attempt}",
                std::process::id(),
                berth_core::time::now_millis()
            );
            let clash = self
                .parts
                .iter()
                .any(|p| contains(&p.body, candidate.as_bytes()));
            if !clash {
                break candidate;
            }
            attempt += 1;
        };
        let mut body = Vec::new();
        for part in &self.parts {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let mut disposition = format!(
                "Content-Disposition: form-data; name=\"{}\"",
                quote(&part.name)
            );
            if let Some(file_name) = &part.file_name {
                disposition.push_str(&format!("; filename=\"{}\"", quote(file_name)));
            }
            body.extend_from_slice(disposition.as_bytes());
            body.extend_from_slice(
                format!("\r\nContent-Type: {}\r\n\r\n", part.content_type).as_bytes(),
            );
            body.extend_from_slice(&part.body);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }
}

fn quote(text: &str) -> String {
    text.replace(['"', '\r', '\n'], "_")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_form() {
        let (content_type, body) = Multipart::new()
            .text("data", "application/json", b"{}".to_vec())
            .file("file", "code.zip", "application/zip", vec![1, 2])
            .finish();
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"data\"\r\nContent-Type: application/json\r\n\r\n{}\r\n"));
        assert!(text.contains("name=\"file\"; filename=\"code.zip\""));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }
}
