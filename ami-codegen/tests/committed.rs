//! The committed generated code is exactly what the generator produces from the catalog now.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn committed_generated_code_matches_the_catalog() {
    let catalog = std::fs::read_to_string(ami_codegen::catalog_path())
        .expect("the catalog at ../shared/catalog (is ../shared beside the repository?)");
    let files = ami_codegen::generate(&catalog).expect("the catalog generates");
    let dir = ami_codegen::output_dir();
    for file in files {
        let path = dir.join(file.name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == file.text,
            "{} differs from the generator's output: run `cargo run -p ami-codegen` and commit",
            path.display()
        );
    }
}
