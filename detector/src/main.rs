fn main() {
    let probes = detector::kernel::attach::Probes::load(Default::default()).unwrap();
    for o in &probes.outcomes {
        println!("{:40} {:?}", o.name, o.status);
        for t in &o.tried {
            println!(
                "      tried {:?} {}: {}",
                t.mechanism,
                t.target,
                t.detail.chars().take(3000).collect::<String>()
            );
        }
    }
    println!("missing: {:?}", probes.missing_fields);
}
