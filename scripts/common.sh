# Sourced by the scripts: locations of the built module and of the nginx it was built against.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
PROFILE_DIR="$ROOT/target/release"
MODULE_SO="$PROFILE_DIR/libngx_http_mail_auth_module.so"

nginx_binary() {
  local dir
  dir=$(cat "$PROFILE_DIR/nginx-build-dir" 2>/dev/null) || { echo "no nginx build found; run cargo build --release" >&2; return 1; }
  echo "$dir/nginx"
}

build_module() {
  (cd "$ROOT" && cargo build --release --locked 2>&1 | tail -n 3)
  [ -f "$MODULE_SO" ] || { echo "build did not produce $MODULE_SO" >&2; return 1; }
}
