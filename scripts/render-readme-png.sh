#!/usr/bin/env bash
# Renders the README's pictures from the seed case (GPT-2 124M on an RTX 3060):
#   docs/img/timeline.png  check's memory-over-the-run chart, at the batch suggest finds for
#                          the unchanged knobs (batch_size 7 x accumulation 10: it fits; 8 x 8
#                          does not, by 483 MiB of allocator fragmentation)
#   docs/img/sweep.png     suggest's peak against batch_size, per knob, with its pick marked
# Not a test: run it by hand after changing the charts, look at the PNGs, commit them.
#
# The SVGs come from `vramplan check --svg` and `vramplan suggest --svg`. The converter is the first found of resvg and
# rsvg-convert; with neither, librsvg2-bin is installed with apt-get (root) or resvg with
# cargo install.
set -euo pipefail
cd "$(dirname "$0")/.."

config=fixtures/configs/seed-rtx3060.py
flags=(--gpu rtx3060 --compile=False --batch_size=7 --gradient_accumulation_steps=10)
out=docs/img
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cargo build --quiet --release
target/release/vramplan check "$config" "${flags[@]}" --svg "$tmp/timeline.svg" >/dev/null
# suggest starts from the user's own run (batch 64 x 1), as in the README's example.
target/release/vramplan suggest "$config" --gpu rtx3060 --svg "$tmp/sweep.svg" >/dev/null

converter() {
    if command -v resvg >/dev/null; then
        echo resvg
    elif command -v rsvg-convert >/dev/null; then
        echo rsvg-convert
    elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2
        apt-get install -y -qq librsvg2-bin fonts-dejavu-core >&2
        echo rsvg-convert
    else
        cargo install --locked resvg >&2
        echo resvg
    fi
}

tool=$(converter)
mkdir -p "$out"
for name in timeline sweep; do
    case $tool in
        resvg) resvg --background white "$tmp/$name.svg" "$out/$name.png" ;;
        rsvg-convert) rsvg-convert --background-color white -o "$out/$name.png" "$tmp/$name.svg" ;;
    esac
    echo "wrote $out/$name.png ($(wc -c <"$out/$name.png") bytes, $tool)"
done
