#!/usr/bin/env bash
# Fills a folder with photographs for synthetic_online's photo_dir option, from
# Debian's mate-backgrounds package (its nature/ wallpapers: 12 photographs,
# 1280x1024 to 2560x1920, GPL-2+, authors in the package's copyright file, which
# is copied beside them). Fetched by `apt-get download` (no install, no root
# needed beyond apt's cache), unpacked with dpkg-deb, never committed.
#
#   bash experiments/fetch_photos.sh ~/flax_gradnet_photos
#   python -m flax_gradnet.main --config=configs/gradnet_small.py --workdir=W \
#     --config.dataset_options.photo_dir=~/flax_gradnet_photos
#
# Checked 2026-12-03 on Debian 12: gnome-backgrounds 43 and ukui-wallpapers hold
# renders and abstract art, not photographs, and are not taken.
# plasma-workspace-wallpapers is deliberately not used: this project keeps it
# for independent checks of trained models.
set -euo pipefail
out="${1:?usage: fetch_photos.sh OUTPUT_FOLDER}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download mate-backgrounds >/dev/null)
dpkg-deb -x "$tmp"/mate-backgrounds_*.deb "$tmp/x"
mkdir -p "$out"
cp "$tmp"/x/usr/share/backgrounds/mate/nature/*.jpg "$out"/
cp "$tmp"/x/usr/share/doc/mate-backgrounds/copyright "$out"/COPYRIGHT.mate-backgrounds
echo "$(ls "$out"/*.jpg | wc -l) photographs in $out"
