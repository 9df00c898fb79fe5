//! `${VAR}` and `${VAR:-default}` expansion in manifest paths.

/// Expands `${NAME}` and `${NAME:-default}` using `lookup`; an unset variable without a default
/// is an error naming it. `$` not followed by `{` is kept as is.
pub fn expand_vars(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in {input:?}"))?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("`${{{body}}}` is not a variable reference"));
        }
        match lookup(name)
            .filter(|v| !v.is_empty())
            .or(default.map(str::to_string))
        {
            Some(value) => out.push_str(&value),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME_DIR").then(|| "/home/x".to_string())
    }

    #[test]
    fn expands_set_unset_and_defaulted_variables() {
        assert_eq!(expand_vars("${HOME_DIR}/a", env).unwrap(), "/home/x/a");
        assert_eq!(expand_vars("${NOPE:-../f}/a", env).unwrap(), "../f/a");
        assert_eq!(expand_vars("plain/$x", env).unwrap(), "plain/$x");
        assert!(expand_vars("${NOPE}/a", env).unwrap_err().contains("NOPE"));
        assert!(expand_vars("${HOME_DIR", env).is_err());
        assert!(expand_vars("${a b}", env).is_err());
    }
}
