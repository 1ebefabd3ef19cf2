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

    // what the module needs to know of the nginx it is built for (config::auth_wait_fixed):
    // NGINX_VER ("nginx/1.28.3", "freenginx/1.27.1"), nginx_version, and whether the builder
    // says its mail proxy has the CVE-2026-27651 fix (scripts/package, for Debian's backport)
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION");
    if let Ok(v) = std::env::var("DEP_NGINX_VERSION") {
        println!("cargo::rustc-env=MAIL_AUTH_BUILT_NGINX_VER={v}");
    }
    if let Ok(n) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        println!("cargo::rustc-env=MAIL_AUTH_BUILT_NGINX_VERSION_NUMBER={n}");
    }
    println!("cargo::rerun-if-env-changed=MAIL_AUTH_NGINX_AUTH_WAIT_FIXED");
    if let Ok(v) = std::env::var("MAIL_AUTH_NGINX_AUTH_WAIT_FIXED") {
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "yes" | "true" => println!("cargo::rustc-env=MAIL_AUTH_BUILT_AUTH_WAIT_FIXED=1"),
            "0" | "off" | "no" | "false" => println!("cargo::rustc-env=MAIL_AUTH_BUILT_AUTH_WAIT_FIXED=0"),
            "" => {}
            _ => panic!("MAIL_AUTH_NGINX_AUTH_WAIT_FIXED={v}: use 1 (the nginx has the CVE-2026-27651 fix) or 0"),
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
