fn main() {
    let obj = include_bytes!(concat!(env!("OUT_DIR"), "/enforcer"));
    println!("{}", obj.len());
}
