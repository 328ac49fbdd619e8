//! `berth stack map|ls|rm` (operator): classic runtimes → images.

use crate::cli::{StackArgs, StackCommand};
use crate::cmd::operator::{ago, with_store};
use berth::cli::Global;
use berth::cmd::invalid;
use berth::cmd::not_found;
use berth::output::table;
use serde_json::json;

/// The command template of a well-known runtime.
fn default_command(runtime: &str) -> Option<Vec<String>> {
    let words: &[&str] = match runtime {
        "sh" => &["sh", "{file}"],
        "binary" => &["./{file}"],
        "python" => &["python3", "{file}"],
        "node" => &["node", "{file}"],
        "ruby" => &["ruby", "{file}"],
        "php" => &["php", "{file}"],
        _ => return None,
    };
    Some(words.iter().map(|w| w.to_string()).collect())
}

pub fn run(global: &Global, args: StackArgs) -> anyhow::Result<u8> {
    match args.command {
        StackCommand::Map {
            runtime,
            image,
            command,
            json,
            db,
        } => {
            let runtime = runtime.trim().to_owned();
            if runtime.is_empty() || image.trim().is_empty() {
                return Err(invalid("a stack needs a runtime name and an image").into());
            }
            let command = match command {
                Some(text) => split_words(&text).map_err(invalid)?,
                None => default_command(&runtime).ok_or_else(|| {
                    invalid(format!(
                        "runtime {runtime:?} has no default command: pass --command, e.g. \
                         --command '{runtime} {{file}}'"
                    ))
                })?,
            };
            if command.is_empty() {
                return Err(invalid("the command template is empty").into());
            }
            let stack = with_store(global, &db, |store| async move {
                store.set_stack(&runtime, image.trim(), &command).await
            })?;
            if json {
                println!("{}", serde_json::to_string(&stack)?);
            } else {
                println!(
                    "runtime {} runs in {}: {}",
                    stack.runtime,
                    stack.image,
                    stack.command.join(" ")
                );
            }
        }
        StackCommand::Ls { json, db } => {
            let stacks = with_store(global, &db, |store| async move { store.stacks().await })?;
            if json {
                println!("{}", json!({ "stacks": stacks }));
            } else {
                let rows: Vec<Vec<String>> = stacks
                    .iter()
                    .map(|s| {
                        vec![
                            s.runtime.clone(),
                            s.image.clone(),
                            s.command.join(" "),
                            ago(s.updated_at),
                        ]
                    })
                    .collect();
                table(&["RUNTIME", "IMAGE", "COMMAND", "UPDATED"], &rows);
            }
        }
        StackCommand::Rm { runtime, json, db } => {
            let name = runtime.clone();
            let removed = with_store(global, &db, |store| async move {
                store.remove_stack(&name).await
            })?;
            if !removed {
                return Err(not_found(format!("no stack for runtime {runtime:?}")).into());
            }
            if json {
                println!("{}", json!({ "removed": runtime }));
            } else {
                println!("removed stack {runtime}");
            }
        }
    }
    Ok(0)
}

/// Splits a command template as a POSIX shell would split words: blanks
/// separate, quotes group, backslash escapes (no expansions).
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' in {text:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" in {text:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" in {text:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing \\ in {text:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split_words("sh {file}").unwrap(), ["sh", "{file}"]);
        assert_eq!(
            split_words(r#"python3 -c 'print(1)' "a \"b\"" c\ d"#).unwrap(),
            ["python3", "-c", "print(1)", "a \"b\"", "c d"]
        );
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn knows_the_classic_runtimes() {
        assert_eq!(default_command("binary").unwrap(), ["./{file}"]);
        assert_eq!(default_command("python").unwrap(), ["python3", "{file}"]);
        assert!(default_command("cobol").is_none());
    }
}
