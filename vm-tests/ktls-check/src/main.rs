//! `ktls-check`: runs the kTLS cases and prints libtest-style lines, the format the VM
//! harness (`cargo xtask vm-test`) parses:
//!
//! ```text
//! test ktls_tls13_aes_128_gcm ... ok
//! SKIP ktls_tls13_aes_128_gcm: kTLS unavailable: setsockopt(TCP_ULP, "tls") = ENOENT ...
//! test ktls_tls13_aes_128_gcm ... skipped
//! test ktls_tls13_aes_128_gcm ... FAILED
//! ```
//!
//! Exits 1 if any case failed, 0 otherwise (skips included). Arguments, if any, are the
//! case names to run.

use std::process::ExitCode;

use ktls_check::{CASES, Case, Outcome};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cases = Vec::new();
    for name in &args {
        match Case::named(name) {
            Some(case) => cases.push(case),
            None => {
                let known: Vec<&str> = CASES.iter().map(|c| c.name).collect();
                eprintln!(
                    "ktls-check: unknown case {name}; known: {}",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if cases.is_empty() {
        cases = CASES.to_vec();
    }

    println!("running {} kTLS cases", cases.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in &cases {
        match ktls_check::run(case) {
            Ok(Outcome::Passed(report)) => {
                println!("{}: {report}", case.name);
                println!("test {} ... ok", case.name);
                passed += 1;
            }
            Ok(Outcome::Unavailable(why)) => {
                println!("SKIP {}: kTLS unavailable: {why}", case.name);
                println!("test {} ... skipped", case.name);
                skipped += 1;
            }
            Err(e) => {
                println!("{}: {e:#}", case.name);
                println!("test {} ... FAILED", case.name);
                failed += 1;
            }
        }
    }
    println!("ktls-check: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
