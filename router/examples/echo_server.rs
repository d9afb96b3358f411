//! Bare tonic echo server for the overhead ratio: `cargo run --release --example echo_server -- 127.0.0.1:50061`.

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:50061".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("error: `{addr}` is not an address like 127.0.0.1:50061");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(router::server::echo::serve(addr)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
