mod support;
use support::wrap::{fold, page_wrap, word_wrap};
#[test]
fn dbg() {
    let spec = std::env::var("DBG").unwrap();
    let mut it = spec.split(',');
    let (name, how, w) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap().parse().unwrap(),
    );
    let log = std::fs::read_to_string(format!("fixtures/oom/{name}.log")).unwrap();
    let t = match how {
        "fold" => fold(&log, w),
        "word" => word_wrap(&log, w),
        _ => page_wrap(&log, w),
    };
    println!("---- RAW\n{t}");
    let n = vramplan::diagnose::normalize::normalize(&t);
    for l in &n.lines {
        println!("[{}] {}", l.stream, l.text);
    }
}
