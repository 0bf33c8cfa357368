fn main() {
    code_hash::emit()
}
