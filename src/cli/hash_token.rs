//! `paygate hash-token`: the SHA-256 of a bearer token from standard input, for the tokens
//! file.

use super::process::Failure;

pub(super) fn run() -> Result<(), Failure> {
    let mut token = String::new();
    std::io::stdin()
        .read_line(&mut token)
        .map_err(|e| Failure::Failed(format!("hash-token: {e}")))?;
    let token = token.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(Failure::Usage(
            "hash-token: no token on standard input".into(),
        ));
    }
    println!("{}", paygate::server::hash_token(token));
    Ok(())
}
