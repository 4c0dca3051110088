//! The `stowage` command line: works on the store directly, no daemon needed.

mod cli;

fn main() {
    let code = match cli::run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stowage: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
