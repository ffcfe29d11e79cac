# Copies the compiler (compile.sh and its Python package) into the directory given as the only
# argument.
set -eu
bb=/bin/busybox
if [ "$#" -ne 1 ] || ! [ -d "$1" ]; then
  echo "usage: entrypoint.sh DIRECTORY (the directory to copy the compiler into)" >&2
  exit 2
fi
$bb cp -R /compiler/. "$1/"
$bb chmod 0755 "$1/compile.sh"
echo "compiler copied into $1: $($bb ls "$1" | $bb tr '\n' ' ')"
