#!/usr/bin/env bash
# Checks that vendor/rskafka is rskafka 0.6.0 as published on crates.io plus the patches in this
# directory, and nothing else, so the patches are the whole review of what changed.
#   vendor/rskafka/patches/check.sh           check (the test command runs this)
#   vendor/rskafka/patches/check.sh --write   after changing the vendored source: write the
#                                             patches again from it, one per changed file
# Needs curl (once: the crate is kept in target/), tar, diff and git.
set -euo pipefail
patches=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vendored=$(dirname "$patches")
root=$(cd "$vendored/../.." && pwd)
url=https://static.crates.io/crates/rskafka/rskafka-0.6.0.crate
sha256=849b87417a191e37e16b8893eba8928bbd10e1989e6b57c4f8531549eaa29bdc
crate="$root/target/rskafka-0.6.0.crate"
# Published files the vendored crate leaves out: the repository's tooling and CI, and the
# integration tests and benchmarks (they need a broker, rdkafka and Java).
left_out=(.cargo_vcs_info.json .circleci .editorconfig .github .gitignore .kodiak.toml
  .yamllint.yml CHANGELOG.md CONTRIBUTING.md Cargo.lock Cargo.toml.orig SECURITY.md benches
  clippy.toml deny.toml docker-compose-kafka.yml docker-compose-redpanda.yml kafka_jaas.conf
  rust-toolchain.toml rustfmt.toml tests)
# The vendored crate's own files: these patches, the notes on them, and the lock file its unit
# tests run with.
ours=(patches PATCHED.md Cargo.lock)

if ! echo "$sha256  $crate" | sha256sum --check --status 2>/dev/null; then
  mkdir -p "$(dirname "$crate")"
  curl --silent --show-error --fail --location --retry 3 -o "$crate.part" "$url"
  echo "$sha256  $crate.part" | sha256sum --check --status ||
    { echo "rskafka-0.6.0.crate from $url: checksum mismatch" >&2; exit 1; }
  mv "$crate.part" "$crate"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
published="$work/rskafka-0.6.0"
for path in "${left_out[@]}"; do rm -rf "${published:?}/$path"; done
mine="$work/vendored"
cp -a "$vendored/." "$mine"
for path in "${ours[@]}"; do rm -rf "${mine:?}/$path"; done

if [ "${1:-}" = --write ]; then
  rm -f "$patches"/*.patch
  (cd "$work" && diff -rq rskafka-0.6.0 vendored || true) | while read -r line; do
    case "$line" in
      "Files rskafka-0.6.0/"*" differ")
        path=${line#Files rskafka-0.6.0/}
        path=${path%% and *}
        old="$published/$path" from="a/$path" ;;
      "Only in vendored"*)
        dir=${line#Only in vendored}
        dir=${dir%%: *}
        dir=${dir#/}
        path="${dir:+$dir/}${line##*: }"
        old=/dev/null from=/dev/null ;;
      *) echo "not a change a patch can carry: $line" >&2; exit 1 ;;
    esac
    if [ -d "$mine/$path" ]; then
      echo "a new directory: add its files one by one: $path" >&2
      exit 1
    fi
    diff -u --label "$from" --label "b/$path" "$old" "$mine/$path" \
      >"$patches/$(echo "$path" | tr / -).patch" || true
  done
  echo "wrote $(ls "$patches"/*.patch | wc -l) patches to $patches"
  exit 0
fi

# git apply refuses a patch that does not apply exactly (no fuzz), and runs outside a repository.
(cd "$published" && git apply --whitespace=nowarn "$patches"/*.patch)
if ! diff -r "$published" "$mine" >"$work/drift"; then
  echo "vendor/rskafka is not rskafka 0.6.0 plus vendor/rskafka/patches:" >&2
  cat "$work/drift" >&2
  echo "(after changing the vendored source on purpose: vendor/rskafka/patches/check.sh --write)" >&2
  exit 1
fi
echo "vendor/rskafka is rskafka 0.6.0 plus $(ls "$patches"/*.patch | wc -l) patches"
