//! Passes the nginx feature flags and version detected by nginx-sys to the compiler as cfgs
//! (the same scheme ngx-rust's examples use), and records where the vendored nginx was built
//! so the scripts can find the matching `nginx` binary.

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_os, values({}))",
        std::env::var("DEP_NGINX_OS_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS");
    if let Ok(os) = std::env::var("DEP_NGINX_OS") {
        println!("cargo::rustc-cfg=ngx_os=\"{os}\"");
    }

    // nginx version cfgs: structures this module touches changed in these versions
    const VERSION_CHECKS: &[(u64, &str)] = &[(1_023_000, "nginx1_23_0")];
    for (_, name) in VERSION_CHECKS {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    if let Ok(version) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        let version: u64 = version.parse().unwrap_or(0);
        for (min, name) in VERSION_CHECKS {
            if version >= *min {
                println!("cargo::rustc-cfg={name}");
            }
        }
    }

    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(build_dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=DEP_NGINX_BUILD_DIR={build_dir}");
        // Leave a pointer next to the build profile directory (target/<profile>/nginx-build-dir)
        // so scripts/test and scripts/demo use the nginx binary this module was built against.
        if let Ok(out) = std::env::var("OUT_DIR") {
            let out = std::path::PathBuf::from(out);
            if let Some(profile_dir) = out.ancestors().nth(3) {
                let _ = std::fs::write(profile_dir.join("nginx-build-dir"), &build_dir);
            }
        }
    }
}
