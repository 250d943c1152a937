# Shared by the scripts (source it).

# The Python venv with torch that scripts/setup.sh makes and uses: $GQE_VENV, or .venv in the repository.
gqe_venv() { printf '%s' "${GQE_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}"; }

# Installs the named Debian packages that are missing, as root or through sudo. Prints what it installs.
install_missing_debs() {
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) != 0 ]] && sudo=sudo
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
