# Sourced by the device scripts (gpu_dmc100k.sh, gpu_genrl.sh, device_scale_out.sh); needs $PY and a `say` function.
# install_wheels FOLDER SITE: pip-install FOLDER/*.whl into SITE without dependencies or an index, once per set of
# wheels (a stamp named by their file names' hash is left in SITE); exits the script when pip fails. Returns 1,
# installing nothing, when FOLDER holds no wheels (the caller says what that means for it).
install_wheels() {
  local stamp
  compgen -G "$1/*.whl" >/dev/null || return 1
  stamp=$(ls "$1"/*.whl | md5sum | cut -c1-12)
  if [[ -f $2/.stamp-$stamp ]]; then
    say "wheels of $1 already installed in $2"
  else
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl \
      || { say "ERROR: pip install of $1 failed"; exit 1; }
    touch "$2/.stamp-$stamp"
    say "installed $(ls "$1"/*.whl | wc -l) wheels of $1 into $2"
  fi
}
