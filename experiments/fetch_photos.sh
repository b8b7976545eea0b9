#!/usr/bin/env bash
# Fills a folder with photographs for synthetic_online's photo_dir option, from
# Debian packages, fetched by `apt-get download` (no install, no root needed
# beyond apt's cache), unpacked with dpkg-deb, never committed:
#   - mate-backgrounds: its nature/ wallpapers, 12 photographs, 1280x1024 to
#     2560x1920, GPL-2+;
#   - lomiri-wallpapers-16.04 and lomiri-wallpapers-20.04 (Ubuntu's wallpaper
#     contest photographs): 15 photographs, 1365x1074 to 6028x3391, CC-BY-4.0 or
#     CC-BY-SA-4.0 each; the renders among them (umang, Fossa, Infinite-Sea,
#     Painting-Colors) are left out.
# Each package's copyright file (authors and licences) is copied beside them.
#
#   bash experiments/fetch_photos.sh ~/flax_gradnet_photos
#   python -m flax_gradnet.main --config=configs/gradnet_small.py --workdir=W \
#     --config.dataset_options.photo_dir=~/flax_gradnet_photos
#
# Checked 2026-12-03 on Debian 12: gnome-backgrounds 43, ukui-wallpapers,
# sway-backgrounds and propaganda-debian hold renders and textures, not
# photographs, and are not taken. plasma-workspace-wallpapers is deliberately
# not used: this project keeps it for independent checks of trained models.
set -euo pipefail
out="${1:?usage: fetch_photos.sh OUTPUT_FOLDER}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
  >/dev/null 2>&1)
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
mkdir -p "$out"
cp "$tmp"/x/usr/share/backgrounds/mate/nature/*.jpg "$out"/
cp "$tmp"/x/usr/share/doc/mate-backgrounds/copyright "$out"/COPYRIGHT.mate-backgrounds
for f in "$tmp"/x/usr/share/backgrounds/*_by_*.jpg; do
  case "$(basename "$f")" in
    umang_*|Fossa_*|Infinite-Sea_*|Painting-Colors_*) ;;  # renders, not photographs
    *) cp "$f" "$out"/ ;;
  esac
done
for p in lomiri-wallpapers-16.04 lomiri-wallpapers-20.04; do
  cp "$tmp/x/usr/share/doc/$p/copyright" "$out/COPYRIGHT.$p"
done
echo "$(ls "$out"/*.jpg | wc -l) photographs in $out"
