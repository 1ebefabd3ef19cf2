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

# A work directory a script uses as root (pid files it kills, files it writes through, a
# configuration nginx's master loads as root) must be the caller's own: made here if missing
# (mkdir fails if another user makes it first), else refused (returns 1) when it is a symbolic
# link, not a directory, another user's, or writable by others: another local user could have
# made it first, in /tmp for instance, and planted links or pids in it.
own_dir() {
  local d=$1
  [ -e "$d" ] || [ -L "$d" ] || mkdir -m 0755 "$d" || return 1
  if [ -L "$d" ] || [ ! -d "$d" ]; then
    echo "$d: not a directory (or a symbolic link): refusing to use it" >&2
    return 1
  fi
  if [ "$(stat -c %u "$d")" != "$(id -u)" ]; then
    echo "$d: owned by uid $(stat -c %u "$d"), not by $(id -un): refusing to use it" >&2
    return 1
  fi
  case "$(stat -c %A "$d")" in
    ?????w????|????????w?)
      echo "$d: writable by other users: refusing to use it" >&2
      return 1 ;;
  esac
}
