//! Builds a Next.js app into its bundle: `cargo run -p ferry-build --example build -- <app> [-- next args]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let app = args.next().unwrap_or_else(|| ".".into());
    let next_args: Vec<String> = args.skip_while(|a| a != "--").skip(1).collect();
    let opts = ferry_build::BuildOptions {
        next_args,
        ..ferry_build::BuildOptions::new(app)
    };
    match ferry_build::build(&opts) {
        Ok(report) => println!("{report:#?}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
