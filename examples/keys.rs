//! Prints the config keys as the README's markdown table.
fn main() {
    println!("| key | default | meaning |\n|---|---|---|");
    for (k, d, def) in vramplan::config::key_table() {
        println!("| `{k}` | `{def}` | {d} |");
    }
}
