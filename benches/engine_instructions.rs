//! Instructions per answered review, counted by `valgrind --tool=callgrind`: a figure that
//! does not move with the machine's load, unlike the times of `engine` (a shared 2-core
//! machine varies by ±10 % from run to run). `bench/instructions.sh` runs this under
//! callgrind twice per case, with 100 and 1100 reviews, and prints the difference / 1000.
//!
//! `cargo bench --bench engine_instructions -- CASE COUNT` answers review CASE (a name from
//! `cases::cases`) COUNT times and prints nothing; `-- --list` prints the case names.

mod cases;

fn main() {
    // cargo bench passes `--bench`; only the words after `--` are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let wanted = args.first().cloned().unwrap_or_default();
    let cases = cases::cases_with(wanted == "--list" || wanted.ends_with("/10k-services"));
    if args.first().map(String::as_str) == Some("--list") || args.is_empty() {
        for case in &cases {
            println!("{}", case.name);
        }
        return;
    }
    let Some(case) = cases.iter().find(|c| c.name == args[0]) else {
        eprintln!(
            "engine_instructions: no case {:?} (--list names them)",
            args[0]
        );
        std::process::exit(2);
    };
    let count: usize = match args.get(1).map(|n| n.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("engine_instructions: give the number of reviews after the case");
            return;
        }
    };
    let policy = cases::policy();
    for _ in 0..count {
        let answer = cases::review(
            std::hint::black_box(&case.body),
            case.view.as_ref(),
            &policy,
            case.endpoint,
        );
        std::hint::black_box(answer);
    }
}
