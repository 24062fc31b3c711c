//! Fuzzes `Recipe::build` with a TOML text, an optional `--to` value and `--tensor-type` rules,
//! and checks that an accepted recipe survives its own `to_toml` unchanged.
//!
//! The input is split at NUL bytes: the first part is the recipe file's text, the second (when
//! there is one) the `--to` value, and up to four more are `REGEX=TYPE` rules. Plain recipe files
//! are therefore inputs as they are, which keeps seeding and minimised crashes readable.
//!
//! The property: `to_toml` is what lowbit stores in every GGUF it writes so that the file can be
//! reproduced, so building from it alone must succeed and give back the same TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lowbit_convert::Recipe;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let toml = parts.next().unwrap_or_default();
    let to = parts.next();
    let rules: Vec<String> = parts.take(4).map(str::to_owned).collect();
    let path = Path::new("fuzz.toml");
    let Ok(recipe) = Recipe::build(Some((path, toml)), to, &rules) else { return };
    let written = recipe.to_toml();
    let again = Recipe::build(Some((path, &written)), None, &[])
        .unwrap_or_else(|e| panic!("to_toml output is refused: {e}\n{written}"));
    assert_eq!(again.to_toml(), written, "to_toml does not round-trip");
    assert_eq!(again.target, recipe.target);
    assert_eq!(again.rules.len(), recipe.rules.len());
});
