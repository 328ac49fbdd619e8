//! Placement benchmark: a seeded random fleet that already holds allocations, then a
//! stream of placements (each committed, so later ones see earlier ones) with a mix
//! of label constraints, hard and soft anti-affinity, hard and soft affinity,
//! binpack, image preference and a few requests that fit nowhere.
//!
//! `cargo run --release -p berth-sched --example bench -- --nodes 10000
//!  --allocations 100000 --placements 100000 --json`
//!
//! Prints one JSON line. Single-threaded: the figure is for one core. The fleet and
//! the requests are generated before the clock starts; each placement is timed from
//! the call to `place` to the end of `Fleet::commit`.

use berth_sched::{place, Fleet, GroupRule, Node, NodeState, Request, Resources, Strategy};
use std::time::Instant;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IMAGES: usize = 20;

/// SplitMix64: small, seeded, good enough for workload generation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100 (fractions allowed via per-mille).
    fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

struct Args {
    nodes: usize,
    allocations: usize,
    placements: usize,
    seed: u64,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: 10_000,
        allocations: 100_000,
        placements: 100_000,
        seed: 1,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--nodes" => args.nodes = number("--nodes")? as usize,
            "--allocations" => args.allocations = number("--allocations")? as usize,
            "--placements" => args.placements = number("--placements")? as usize,
            "--seed" => args.seed = number("--seed")?,
            "--json" => args.json = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --nodes N --allocations N --placements N [--seed N] [--json]"
                ))
            }
        }
    }
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    Ok(args)
}

fn image_name(j: usize) -> String {
    format!("registry.example/app-{j}:1")
}

fn build_nodes(rng: &mut Rng, count: usize) -> Vec<Node> {
    (0..count)
        .map(|i| {
            let cores = rng.pick(&[16u64, 32, 64]);
            let allocatable = Resources::new(
                cores * 1000,
                cores * 4 * GIB,
                rng.pick(&[500 * GIB, 1024 * GIB, 2048 * GIB]),
                32_768,
            );
            let rack = i / 200;
            let state = match rng.below(1000) {
                0..=9 => NodeState::Draining,
                10..=14 => NodeState::Down,
                _ => NodeState::Ready,
            };
            let mut node = Node::new(format!("host-{i:05}"), allocatable)
                .with_state(state)
                .with_label("rack", format!("r{rack:02}"))
                .with_label("zone", ["a", "b", "c", "d"][rack % 4])
                .with_label("gpu", if rng.per_mille(100) { "true" } else { "false" })
                .with_label("arch", if rng.per_mille(150) { "arm64" } else { "amd64" })
                .with_label("disk", if rng.per_mille(700) { "ssd" } else { "hdd" });
            // Image j is on a host with probability 0.8 × 0.75^j: a few popular
            // images, a long tail of rare ones.
            let mut p = 800.0;
            for j in 0..IMAGES {
                if (rng.below(1000) as f64) < p {
                    node = node.with_image(image_name(j));
                }
                p *= 0.75;
            }
            node
        })
        .collect()
}

fn task_resources(rng: &mut Rng) -> Resources {
    Resources::new(
        rng.pick(&[100, 250, 500, 1000, 2000]),
        rng.pick(&[128 * MIB, 256 * MIB, 512 * MIB, GIB, 2 * GIB, 4 * GIB]),
        rng.pick(&[0, GIB, 5 * GIB]),
        rng.pick(&[0, 100]),
    )
}

/// Fills the hosts with existing allocations: some in anti-affinity groups of three
/// (`svc<k>`, on distinct hosts), some in affinity pairs (`pair<k>`, on one host).
/// Returns the number of groups of each kind.
fn fill(rng: &mut Rng, nodes: &mut [Node], allocations: usize) -> (usize, usize) {
    let mut placed = 0;
    let mut svc = 0;
    let mut pairs = 0;
    let try_put = |rng: &mut Rng, nodes: &mut [Node], res: Resources, avoid: &[usize]| {
        for _ in 0..16 {
            let at = rng.below(nodes.len() as u64) as usize;
            if avoid.contains(&at) {
                continue;
            }
            if let Some(after) = nodes[at].allocated.checked_add(&res) {
                if after.fits_within(&nodes[at].allocatable) {
                    nodes[at].allocated = after;
                    return Some(at);
                }
            }
        }
        None
    };
    while placed < allocations {
        let roll = rng.below(100);
        if roll < 40 && allocations - placed >= 3 {
            let group = format!("svc{svc}");
            svc += 1;
            let res = task_resources(rng);
            let mut used = Vec::new();
            for member in 0..3 {
                if let Some(at) = try_put(rng, nodes, res, &used) {
                    let name = format!("{group}_{member}");
                    nodes[at]
                        .groups
                        .entry(group.clone())
                        .or_default()
                        .push(name);
                    used.push(at);
                }
                placed += 1;
            }
        } else if roll < 50 && allocations - placed >= 2 {
            let group = format!("pair{pairs}");
            pairs += 1;
            let res = task_resources(rng);
            let twice = res.saturating_add(&res);
            if let Some(at) = try_put(rng, nodes, twice, &[]) {
                for member in 0..2 {
                    let name = format!("{group}_{member}");
                    nodes[at]
                        .groups
                        .entry(group.clone())
                        .or_default()
                        .push(name);
                }
            }
            placed += 2;
        } else {
            let res = task_resources(rng);
            try_put(rng, nodes, res, &[]);
            placed += 1;
        }
    }
    (svc, pairs)
}

const CONSTRAINTS: [&str; 7] = [
    "zone==a",
    "zone!=b",
    "arch==arm64",
    "rack==r1*",
    "zone=~a|c",
    "disk!~hdd",
    "gpu==true",
];

fn build_requests(
    rng: &mut Rng,
    count: usize,
    svc_groups: usize,
    pair_groups: usize,
) -> Vec<Request> {
    let mut requests = Vec::with_capacity(count);
    let mut jobs = 0;
    let mut duos = 0;
    while requests.len() < count {
        let id = requests.len();
        // Members of one group come from one code: same resources, constraint,
        // strategy and image; only the id differs.
        let template = |rng: &mut Rng| {
            let resources = task_resources(rng);
            let constraint = rng
                .per_mille(400)
                .then(|| CONSTRAINTS[rng.below(CONSTRAINTS.len() as u64) as usize]);
            let binpack = rng.per_mille(250);
            // Skewed towards popular images, like the fleet.
            let image = rng
                .per_mille(500)
                .then(|| (rng.below(IMAGES as u64) * rng.below(IMAGES as u64)) as usize / IMAGES);
            move |id: usize| {
                let mut request = Request::new(format!("task-{id}"), resources)
                    .with_constraints(constraint)
                    .expect("the bench's constraints parse");
                if binpack {
                    request = request.with_strategy(Strategy::Binpack);
                }
                if let Some(j) = image {
                    request = request.with_image(image_name(j));
                }
                request
            }
        };
        let base = |rng: &mut Rng, id: usize| template(rng)(id);
        let roll = rng.below(1000);
        if roll < 2 {
            // Fits nowhere: refused with a full explanation.
            requests.push(
                Request::new(format!("task-{id}"), Resources::new(1000, 512 * GIB, 0, 0))
                    .with_constraints(["gpu==true"])
                    .expect("valid"),
            );
        } else if roll < 100 {
            // A job of three that must land on three different hosts.
            let group = format!("job{jobs}");
            jobs += 1;
            let member = template(rng);
            for k in 0..3 {
                let request = member(id + k)
                    .with_rule(GroupRule::hard_anti_affinity(group.clone()))
                    .expect("one rule");
                requests.push(request);
            }
        } else if roll < 150 && svc_groups > 0 {
            let group = format!("svc{}", rng.below(svc_groups as u64));
            requests.push(
                base(rng, id)
                    .with_rule(GroupRule::soft_anti_affinity(group))
                    .expect("one rule"),
            );
        } else if roll < 200 {
            // A pair that must share a host.
            let group = format!("duo{duos}");
            duos += 1;
            let member = template(rng);
            for k in 0..2 {
                requests.push(
                    member(id + k)
                        .with_rule(GroupRule::hard_affinity(group.clone()))
                        .expect("one rule"),
                );
            }
        } else if roll < 250 && pair_groups > 0 {
            let group = format!("pair{}", rng.below(pair_groups as u64));
            requests.push(
                base(rng, id)
                    .with_rule(GroupRule::soft_affinity(group))
                    .expect("one rule"),
            );
        } else {
            requests.push(base(rng, id));
        }
    }
    requests.truncate(count);
    requests
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench: {message}");
            std::process::exit(2);
        }
    };
    let mut rng = Rng(args.seed);
    let mut nodes = build_nodes(&mut rng, args.nodes);
    let (svc_groups, pair_groups) = fill(&mut rng, &mut nodes, args.allocations);
    let requests = build_requests(&mut rng, args.placements, svc_groups, pair_groups);
    let build = Instant::now();
    let mut fleet = match Fleet::new(nodes) {
        Ok(fleet) => fleet,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    };
    let snapshot_ms = build.elapsed().as_secs_f64() * 1e3;

    let mut latencies_ns: Vec<u64> = Vec::with_capacity(requests.len());
    let mut refusals = 0usize;
    let mut commit_failures = 0usize;
    let mut soft_given_up = 0usize;
    let mut image_hits = 0usize;
    let mut checked = 0u64;
    let started = Instant::now();
    for request in &requests {
        let t = Instant::now();
        match place(&fleet, request) {
            Ok(placement) => {
                if fleet.commit(&placement).is_err() {
                    commit_failures += 1;
                }
                soft_given_up += usize::from(!placement.soft_rules_given_up.is_empty());
                image_hits += usize::from(placement.image_present);
                checked += u64::from(placement.hosts_checked);
            }
            Err(refusal) => {
                refusals += 1;
                if std::env::var_os("BENCH_SHOW_REFUSALS").is_some() {
                    eprintln!("{}: {refusal}", request.id());
                }
            }
        }
        latencies_ns.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies_ns.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies_ns.is_empty() {
            return 0.0;
        }
        let i = ((latencies_ns.len() as f64 * q) as usize).min(latencies_ns.len() - 1);
        latencies_ns[i] as f64 / 1e3
    };
    let placed = requests.len() - refusals;
    let with_image = requests.iter().filter(|r| r.image().is_some()).count();
    let report = serde_json::json!({
        "nodes": args.nodes,
        "allocations": args.allocations,
        "placements": requests.len(),
        "placed": placed,
        "refusals": refusals,
        "commit_failures": commit_failures,
        "classes": fleet.class_count(),
        "placements_per_second": (requests.len() as f64 / elapsed).round(),
        "p50_us": (at(0.50) * 100.0).round() / 100.0,
        "p99_us": (at(0.99) * 100.0).round() / 100.0,
        "p999_us": (at(0.999) * 100.0).round() / 100.0,
        "max_us": (at(1.0) * 100.0).round() / 100.0,
        "hosts_checked_per_placement": if placed == 0 { 0.0 } else { ((checked as f64 / placed as f64) * 10.0).round() / 10.0 },
        "soft_rules_given_up": soft_given_up,
        "image_present": image_hits,
        "requests_with_image": with_image,
        "snapshot_build_ms": (snapshot_ms * 10.0).round() / 10.0,
        "seed": args.seed,
    });
    if !args.json {
        eprintln!(
            "placed {placed} of {} on {} hosts in {elapsed:.3} s",
            requests.len(),
            args.nodes
        );
    }
    println!("{report}");
}
