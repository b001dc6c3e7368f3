#!/usr/bin/env bash
# Checks every ELF executable in DIR (default build/bin): if it needs a LibTorch library
# (libtorch*, libc10*), libstdc++ must come before all of them in its dynamic section, so no
# std:: symbol can bind to the copy PyTorch wheels export (pytorch/pytorch#133437).
# Prints one line per binary; exit 1 if any is wrong or none was checked.
set -uo pipefail
dir=${1:-build/bin}
checked=0 bad=0
for f in "$dir"/*; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  head -c 4 "$f" | grep -q $'\x7fELF' || continue
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  first_torch=$(echo "$needed" | grep -n -m1 -E '^lib(torch|c10)' | cut -d: -f1)
  [ -z "$first_torch" ] && { echo "no LibTorch  $(basename "$f")"; continue; }
  stdcxx=$(echo "$needed" | grep -n -m1 '^libstdc++' | cut -d: -f1)
  checked=$((checked + 1))
  if [ -n "$stdcxx" ] && [ "$stdcxx" -lt "$first_torch" ]; then
    echo "ok           $(basename "$f") (libstdc++ is NEEDED entry $stdcxx, LibTorch's first is $first_torch)"
  elif [ -z "$stdcxx" ] && ! readelf --dyn-syms -W "$f" | grep -q 'UND .*@GLIBCXX_'; then
    # A compiler that links libstdc++ statically (the GPU node's /opt/gcc): the binary imports
    # no std:: symbol at all, so none can bind to LibTorch's copy.
    echo "ok           $(basename "$f") (libstdc++ linked statically: no GLIBCXX symbol imported)"
  else
    echo "WRONG ORDER  $(basename "$f"): NEEDED = $(echo $needed)"
    bad=$((bad + 1))
  fi
done
echo "$checked binaries with LibTorch checked, $bad in the wrong order"
[ "$checked" -gt 0 ] && [ "$bad" -eq 0 ]
