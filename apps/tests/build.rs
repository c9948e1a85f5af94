//! Hands the tests program the kv server's flat image to embed (the
//! `kv_server_*` cases spawn it): the workspace build.rs builds it first and
//! passes its path in `MICA_KV_IMAGE`. A build without it (a bare `cargo
//! clippy -p tests`) embeds an empty image, and those cases fail saying so.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=MICA_KV_IMAGE");
    let path = match env::var_os("MICA_KV_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("no-kv-image");
            fs::write(&p, b"").unwrap();
            p
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=MICA_KV_IMAGE_PATH={}", path.display());
}
