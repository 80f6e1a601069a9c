//! YAML in and out. A stream is split into its documents, each parsed alone, so an error
//! names its document, the field (`spec.file[0].path`) and the line and column in the whole
//! stream; the text written for policies and the CRD keeps each value on one line.

use std::fmt::Write as _;

use serde::{Serialize, de::DeserializeOwned};
use serde_path_to_error::{Path, Segment};
use serde_saphyr::granit_parser::{Event, Parser};

/// One document of a YAML stream: whole lines of the text.
pub struct Document<'a> {
    text: &'a str,
    /// Lines of the stream before this document.
    line_offset: u64,
    /// The stream has a syntax error here (the document runs to the end of the stream).
    malformed: bool,
}

/// Where a document does not fit the type: the field (`(document)` for the whole of it) and
/// the problem, ending with the line and column.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub problem: String,
}

/// The documents of a YAML stream, in order, empty ones included. The YAML parser finds
/// where each ends (at the line of the next `---`, or after the line of a `...`); a syntax
/// error stops the split, and the rest of the stream is one last document whose parse
/// reports that error.
pub fn documents(text: &str) -> Vec<Document<'_>> {
    // The byte offset of each line's start (0-based lines).
    let line_starts: Vec<usize> =
        std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    let mut ends = Vec::new(); // the first line after each document, and its byte offset
    let mut malformed = false;
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::DocumentEnd, span)) => {
                // The parser's lines are 1-based; an end within a line (after `...` or a
                // flow node) ends the document after that line.
                let line = span.end.line().saturating_sub(1) + usize::from(span.end.col() > 0);
                ends.push((line, line_starts.get(line).copied().unwrap_or(text.len())));
            }
            // The last document runs to the end of the stream, with any comment after it.
            Ok((Event::StreamEnd, _)) => _ = ends.pop(),
            Ok(_) => {}
            Err(_) => {
                malformed = true;
                break;
            }
        }
    }
    let mut documents = Vec::with_capacity(ends.len() + 1);
    let mut start = (0, 0);
    for end in ends.into_iter().chain(std::iter::once((line_starts.len(), text.len()))) {
        documents.push(Document {
            text: &text[start.1..end.1],
            line_offset: u64::try_from(start.0).expect("a line count fits in 64 bits"),
            malformed: false,
        });
        start = end;
    }
    if let Some(last) = documents.last_mut() {
        last.malformed = malformed;
    }
    documents
}

/// Every document of a stream as a `T`, empty ones skipped, in one pass of the parser;
/// `None` if any document does not fit, so the caller can split the stream with
/// [`documents`] to say which, where and why. (Splitting first costs a second pass.)
pub fn all<T: DeserializeOwned>(text: &str) -> Option<Vec<T>> {
    serde_saphyr::from_multiple_with_options(text, serde_saphyr::options! { with_snippet: false }).ok()
}

impl Document<'_> {
    /// The document as a `T`. Unknown fields are errors when `T` says so
    /// (`deny_unknown_fields`); an empty document is `None` for an `Option`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let options = || serde_saphyr::options! { with_snippet: false };
        if self.malformed {
            // Report the syntax error, not whatever the type meets before it.
            serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(self.text, options())
                .map_err(|e| self.problem(&e, None))?;
        }
        let mut path = None;
        serde_saphyr::with_deserializer_from_str_with_options(self.text, options(), |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = Some(e.path().clone());
                e.into_inner()
            })
        })
        .map_err(|e| self.problem(&e, path.as_ref()))
    }

    fn problem(&self, error: &serde_saphyr::Error, path: Option<&Path>) -> Problem {
        let problem = error.render_with_options(serde_saphyr::render_options! {
            formatter: &serde_saphyr::UserMessageFormatter,
            snippets: serde_saphyr::SnippetMode::Off,
            line_offset: self.line_offset,
        });
        let mut segments: Vec<&Segment> = path.map(|p| p.iter().collect()).unwrap_or_default();
        // A key that failed to read has no name; an unknown field is named by the problem.
        while matches!(segments.last(), Some(Segment::Unknown)) {
            segments.pop();
        }
        if let serde_saphyr::Error::SerdeUnknownField { field, .. } = error.without_snippet()
            && matches!(segments.last(), Some(Segment::Map { key }) if key == field)
        {
            segments.pop();
        }
        let mut field = String::new();
        for segment in segments {
            let key = match segment {
                Segment::Seq { index } => {
                    _ = write!(field, "[{index}]");
                    continue;
                }
                Segment::Map { key } | Segment::Enum { variant: key } => key,
                Segment::Unknown => "?",
            };
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(key);
        }
        if field.is_empty() {
            field.push_str("(document)");
        }
        Problem { field, problem }
    }
}

/// YAML text of a policy, the CRD or another value. Long strings stay on one line (not
/// folded), so line diffs of policies show whole values.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string_with_options(value, serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        items: Vec<BTreeMap<String, u16>>,
    }

    fn texts(stream: &str) -> Vec<&str> {
        documents(stream).iter().map(|d| d.text).collect()
    }

    #[test]
    fn splits_at_markers_into_whole_lines() {
        assert_eq!(texts(""), [""]);
        assert_eq!(texts("a: 1\n"), ["a: 1\n"]);
        assert_eq!(texts("a: 1\n---\nb: 2\n---\n"), ["a: 1\n", "---\nb: 2\n", "---\n"]);
        assert_eq!(texts("--- {a: 1}\n--- [b]\n# end\n"), ["--- {a: 1}\n", "--- [b]\n# end\n"]);
        assert_eq!(
            texts("a: 1\n...\n%YAML 1.2\n---\nb: 2"),
            ["a: 1\n...\n", "%YAML 1.2\n---\nb: 2"],
            "a directive belongs to the document after it"
        );
        // A syntax error: the rest is one document.
        assert_eq!(texts("a: 1\n---\nb: [\n---\nc: 3\n"), ["a: 1\n", "---\nb: [\n---\nc: 3\n"]);
    }

    #[test]
    fn problems_give_the_field_and_the_line_in_the_stream() {
        let stream = "items: []\n---\n# two\nitems:\n  - {a: 1}\n  - {a: x}\n";
        let docs = documents(stream);
        assert_eq!(docs[0].parse::<Doc>(), Ok(Doc { items: Vec::new() }));
        let problem = docs[1].parse::<Doc>().unwrap_err();
        assert_eq!(problem.field, "items[1].a");
        assert!(problem.problem.ends_with("at line 6, column 9"), "{problem:?}");

        let problem = documents("items: []\n---\nitems: []\nitems: []\n")[1].parse::<Doc>().unwrap_err();
        assert_eq!(
            (problem.field.as_str(), problem.problem.as_str()),
            ("(document)", "duplicate mapping key `items` is not allowed here at line 4, column 1")
        );
        let problem = documents("other: 1\n")[0].parse::<Doc>().unwrap_err();
        assert_eq!(problem.field, "(document)");
        assert!(problem.problem.starts_with("unknown field `other`"), "{problem:?}");
        assert_eq!(documents("---\n")[0].parse::<Option<Doc>>(), Ok(None));
    }

    #[test]
    fn all_documents_in_one_pass_or_none() {
        let stream = "items: [{a: 1}]\n---\n---\n# nothing\n...\nitems: []\n";
        assert_eq!(
            all::<Doc>(stream),
            Some(vec![Doc { items: vec![[("a".to_owned(), 1)].into()] }, Doc { items: Vec::new() }])
        );
        let split: Vec<Option<Doc>> = documents(stream).iter().map(|d| d.parse().unwrap()).collect();
        assert_eq!(split.into_iter().flatten().collect::<Vec<_>>(), all::<Doc>(stream).unwrap());
        assert_eq!(all::<Doc>("items: []\n---\nother: 1\n"), None);
        assert_eq!(all::<Doc>("items: [\n"), None);
    }

    #[test]
    fn written_text_reads_back() {
        let values: BTreeMap<String, String> = [
            ("long", "a value with spaces that is longer than a line of eighty characters, kept on one line"),
            ("lines", "two\nlines"),
            ("number", "123"),
            ("boolean", "yes"),
            ("null", "~"),
            ("empty", ""),
            ("colon", "a: b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let text = to_string(&values).unwrap();
        assert!(text.lines().any(|l| l.starts_with("long: a value") && l.ends_with("one line")), "{text}");
        assert_eq!(documents(&text)[0].parse::<BTreeMap<String, String>>(), Ok(values));
    }
}
