mod common;
use berth_runtime::StdioFds;

#[test]
fn runs_true() {
    let env = common::Env::new();
    let spec = env.spec(&["true"]);
    let mut c = env.runtime.create(&spec, StdioFds::default()).unwrap();
    c.start().unwrap();
    c.wait(None).unwrap();
    let r = c.delete().unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.exit_code, Some(0));
    assert!(env.leftover_cgroups().is_empty());
}
