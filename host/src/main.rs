fn main() {
    println!("cretok");
}
