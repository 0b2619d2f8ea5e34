//! Text with `{name}` placeholders, split once at config load into its
//! literal parts and its placeholders: header values and redirect targets
//! are made per request from the parts, without parsing again.

/// One piece of a template: literal text, or a placeholder `P`.
#[derive(Debug, Clone)]
pub enum Part<P> {
    Text(Box<str>),
    Var(P),
}

/// Splits `text` into parts, each `{...}` given to `placeholder`; one it
/// does not know stays literal (the config refused unknown ones already).
pub fn parse<P>(text: &str, placeholder: impl Fn(&str) -> Option<P>) -> Vec<Part<P>> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        if open > 0 {
            parts.push(Part::Text(rest[..open].into()));
        }
        let name = &rest[open..open + close + 1];
        parts.push(placeholder(name).map_or_else(|| Part::Text(name.into()), Part::Var));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.into()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_splits_into_text_and_known_placeholders() {
        let parts = parse("a{x}b{y}{x}", |name| (name == "{x}").then_some(1));
        let shown: Vec<String> = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.to_string(),
                Part::Var(v) => format!("<{v}>"),
            })
            .collect();
        assert_eq!(shown, ["a", "<1>", "b", "{y}", "<1>"]);
        assert!(parse("", |_| Some(0)).is_empty());
    }
}
