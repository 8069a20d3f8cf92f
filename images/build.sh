#!/usr/bin/env bash
# Builds pgup's images from Debian packages only: no registry is needed.
#
#   pgup/upgrade:13-15-17-18 (+ :latest)  PostgreSQL 13, 15, 17 and 18 binaries side by side
#   pgup/postgres:13 :15 :17 :18          servers that behave like the official postgres images
#   pgup/postgres:15-uid70                the data owner is uid 70, as in the Alpine images
#
# One trixie root (debootstrap) is the base of every image; older and newer majors come from
# bullseye, bookworm and forky through apt pinning, so all images share one glibc and one
# collation behaviour.
#
# An image is built again only when it would come out different. Before building, the script
# asks the mirror what it would install today: in the resolver, a trixie root kept in
# $PGUP_BUILD_DIR/apt-resolve with the same apt, configuration and package lists as a build,
# `apt-get -s` plays every install of every image. An image's label org.pgup.build-hash is the
# hash of this script, the entrypoint and that list of package versions, so a moved mirror
# rebuilds the images it moves, and only those; a build then installs from those very lists.
# When the mirror cannot be reached, images are compared by script hash alone (with a warning).
# Every image also carries org.pgup.packages: each package=version it holds.
#
# Usage: images/build.sh [--force | --check | --list]
#   --force  build every image again
#   --check  ask the mirror, say what would be built and why, print what --list prints; build
#            nothing; exit 1 unless all images are current
#   --list   a line per image: its name, its state (current, outdated, missing; unchecked when
#            no resolution is stored yet) and the versions that matter; reads labels only, offline
# Environment: PGUP_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              PGUP_BUILD_DIR (default /var/tmp/pgup-images; keeps the resolver and a package cache).
set -euo pipefail
shopt -s inherit_errexit
# One collation for every sort and comm below, and for the commands run in the roots.
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mirror=${PGUP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
build_dir=${PGUP_BUILD_DIR:-/var/tmp/pgup-images}
resolve_dir=$build_dir/apt-resolve
rroot=$resolve_dir/root
states=$resolve_dir/states
majors=(13 15 17 18)
suites=(trixie bookworm bullseye forky)
script_hash=$(cat "$here/build.sh" "$here/docker-entrypoint.sh" | sha256sum | cut -c1-16)

suite_of() {
	case $1 in
	13) echo bullseye ;;
	15) echo bookworm ;;
	17) echo trixie ;;
	18) echo forky ;;
	*) echo "no Debian suite known for PostgreSQL $1" >&2 && return 1 ;;
	esac
}

# name|majors|uid: every image this script makes.
images=(
	"pgup/upgrade:13-15-17-18|13 15 17 18|999"
	"pgup/postgres:13|13|999"
	"pgup/postgres:15|15|999"
	"pgup/postgres:17|17|999"
	"pgup/postgres:18|18|999"
	"pgup/postgres:15-uid70|15|70"
)

# The apt installs after debootstrap, each as "TARGET-RELEASE PACKAGE..." (- for the default
# release, trixie). A build runs exactly these, the resolver simulates exactly these.
# postgresql-18 from forky needs forky's glibc; every image gets it first, so that all share
# one glibc (one collation behaviour) and the locale made in the base stays valid.
base_steps=("forky libc6 libc-bin locales")
image_steps() {
	local m
	echo "- postgresql-common"
	for m in $1; do echo "$(suite_of "$m") postgresql-$m"; done
}

# step_pkgs STEP: its packages, one a line; step_args STEP: apt-get's arguments for it.
step_pkgs() {
	local pkgs
	read -r _ pkgs <<<"$1"
	# shellcheck disable=SC2086 # the package names are words
	printf '%s\n' $pkgs
}
step_args() {
	[ "${1%% *}" = - ] || printf '%s\n' -t "${1%% *}"
	echo install
	step_pkgs "$1"
}

log() { printf 'build.sh: %s\n' "$*" >&2; }

label() { docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

# --list: the state and the versions that matter of each image, from labels and from the keys of
# the last resolution (which a run as root stores): no network, no root.
list_images() {
	local spec name state line all=true
	declare -A known=()
	if [ -r "$resolve_dir/keys" ] && [ "$(sed -n 's/^script //p' "$resolve_dir/keys")" = "$script_hash" ]; then
		while read -r line; do known[${line%% *}]=${line#* }; done < <(sed -n 's/^image //p' "$resolve_dir/keys")
		log "states against the mirror as resolved at $(sed -n 's/^resolved //p' "$resolve_dir/keys") (build.sh run as root resolves it again)"
	else
		log "no resolution of the mirror stored for this build.sh yet: 'unchecked' images match the scripts; run build.sh --check as root"
	fi
	for spec in "${images[@]}" "pgup/upgrade:latest|${majors[*]}|999"; do
		name=${spec%%|*}
		if ! docker image inspect "$name" >/dev/null 2>&1; then
			printf '%-26s %s\n' "$name" missing
			all=false
			continue
		fi
		if [ "$(label "$name" org.pgup.script-hash)" != "$script_hash" ]; then
			state=outdated
		elif [ -n "${known[$name]:-}" ]; then
			if [ "$(label "$name" org.pgup.build-hash)" = "${known[$name]}" ]; then state=current; else state=outdated; fi
		else
			state=unchecked
		fi
		[ "$state" = current ] || all=false
		printf '%-26s %-9s %s\n' "$name" "$state" "$(key_versions "$name")"
	done
	$all
}

# key_versions NAME: from its org.pgup.packages label, the packages an image is judged by.
key_versions() {
	local pkgs
	pkgs=$(label "$1" org.pgup.packages)
	[ -n "$pkgs" ] || { echo "(no org.pgup.packages label: built by an older build.sh)"; return 0; }
	tr ' ' '\n' <<<"$pkgs" | awk -F= '
		$1 ~ /^postgresql-[0-9]+$/ { print 1, $0; next }
		$1 == "postgresql-common" { print 2, $0; next }
		$1 == "libc6" { print 3, $0; next }
		$1 ~ /^libicu[0-9]/ { print 4, $0; next }
		$1 ~ /^libssl[0-9]/ { print 5, $0; next }
		$1 ~ /^libllvm[0-9]/ { print 6, $0 }' | sort -k1,1n -k2,2V | cut -d' ' -f2 | paste -sd' '
}

force=false check=false
case ${1:-} in
--force) force=true ;;
--check) check=true ;;
--list)
	list_images || true
	exit 0
	;;
"") ;;
*) echo "usage: images/build.sh [--force | --check | --list]" >&2 && exit 2 ;;
esac

work=
mounts=()
cleanup() {
	local m pids
	mapfile -t pids < <(jobs -pr)
	[ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
	for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
	[ -z "$work" ] || rm -rf "$work" "$rroot/tmp/pgup.$$"
}
trap cleanup EXIT

# Runs a command inside a root with /proc and the shared package cache mounted.
in_root() {
	local root=$1
	shift
	mount -t proc proc "$root/proc" && mounts+=("$root/proc")
	mount --bind "$build_dir/archives" "$root/var/cache/apt/archives" && mounts+=("$root/var/cache/apt/archives")
	local rc=0
	DEBIAN_FRONTEND=noninteractive chroot "$root" "$@" || rc=$?
	umount "$root/var/cache/apt/archives" "$root/proc"
	mounts=("${mounts[@]:0:${#mounts[@]}-2}")
	return $rc
}

# configure_root ROOT: the apt and dpkg set-up every build root has (all of it before any install
# step, so the resolver, whose root this also is, plays the steps under the same rules).
configure_root() {
	local root=$1 s
	for s in "${suites[@]}"; do echo "deb $mirror $s main"; done >"$root/etc/apt/sources.list"
	# forky's Release file is past its Valid-Until date on the mirror.
	cat >"$root/etc/apt/apt.conf.d/90pgup" <<-'EOF'
		APT::Default-Release "trixie";
		Acquire::Check-Valid-Until "false";
		Acquire::Languages "none";
		APT::Install-Recommends "false";
		APT::Install-Suggests "false";
		Binary::apt::APT::Keep-Downloaded-Packages "true";
	EOF
	cat >"$root/etc/dpkg/dpkg.cfg.d/90pgup-nodoc" <<-'EOF'
		path-exclude=/usr/share/doc/*
		path-exclude=/usr/share/man/*
		path-exclude=/usr/share/info/*
		path-exclude=/usr/share/locale/*
	EOF
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	mkdir -p "$root/etc/postgresql-common"
	echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.conf"
	rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info"
}

# make_resolver: a fresh debootstrap of trixie as the resolver (and base) root, keeping the
# package lists of the one it replaces, so that apt-get update stays incremental.
make_resolver() {
	local new=$resolve_dir/root.new
	command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; return 1; }
	log "debootstrap trixie into $rroot"
	rm -rf "$new"
	mkdir -p "$build_dir/archives/partial"
	debootstrap --variant=minbase --cache-dir="$build_dir/archives" trixie "$new" "$mirror" \
		>"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; return 1; }
	configure_root "$new"
	if [ -d "$rroot/var/lib/apt/lists" ]; then
		rm -rf "$new/var/lib/apt/lists"
		mv "$rroot/var/lib/apt/lists" "$new/var/lib/apt/lists"
	fi
	rm -rf "$rroot"
	mv "$new" "$rroot"
	# The mirror its lists come from, once apt-get update made them.
	: >"$rroot/.pgup-resolver"
}

# probe_mirror DIR: each suite's InRelease as the mirror serves it now; fails when it cannot be reached.
probe_mirror() {
	local s
	mkdir -p "$1"
	for s in "${suites[@]}"; do
		wget -nv -T 20 -t 1 -O "$1/$s" "$mirror/dists/$s/InRelease" 2>"$work/wget.log" ||
			{ log "$(tail -1 "$work/wget.log")"; return 1; }
	done
}

# lists_match PROBE: whether the resolver's lists came from exactly the InRelease files in PROBE
# (compared byte for byte with the ones apt verified: nothing fetched by wget is trusted).
lists_match() {
	local f known=" "
	for f in "$rroot"/var/lib/apt/lists/*_InRelease; do
		[ -e "$f" ] && known+="$(sha256sum <"$f" | cut -c1-64) "
	done
	for f in "$1"/*; do
		[[ $known == *" $(sha256sum <"$f" | cut -c1-64) "* ]] || return 1
	done
}

# refresh_lists PROBE: apt-get update in the resolver when the mirror moved (or is another one
# than the lists came from). apt checks the signatures with the root's debian-archive-keyring,
# which debootstrap checked with the host's.
refresh_lists() {
	if [ "$(cat "$rroot/.pgup-resolver")" = "$mirror" ] && lists_match "$1"; then return 0; fi
	log "the mirror moved: apt-get update in the resolver"
	cp -L /etc/resolv.conf "$rroot/etc/resolv.conf" 2>/dev/null || true
	chroot "$rroot" apt-get -q --error-on=any update >"$work/apt-update.log" 2>&1 ||
		{ cat "$work/apt-update.log" >&2; return 1; }
	echo "$mirror" >"$rroot/.pgup-resolver"
}

# lists_hash SUITE...: those suites' package lists: signed InRelease files by content, indexes by
# size and date (apt rewrites an unchanged InRelease, never an unchanged index).
lists_hash() {
	local s f
	for s in "$@"; do
		for f in "$rroot"/var/lib/apt/lists/*_dists_"${s}"_*; do
			case $f in
			*_InRelease) sha256sum <"$f" ;;
			*) stat -c '%n %s %Y' "$f" ;;
			esac
		done
	done | sha256sum | cut -c1-32
}

# lists_id SUITE...: what a simulation depends on besides its steps: this script, the resolver's
# own packages (its apt) and those lists.
lists_id() {
	{ echo "$script_hash"; sha256sum <"$rroot/var/lib/dpkg/status"; lists_hash "$@"; } | sha256sum | cut -c1-32
}

# A state is what a root holds: a sorted name=version list, and beside it STATE.manual, the
# names installed by request (apt's auto-installed marks can change its later choices).
# parse_sim IN: state IN changed by the Inst and Remv lines of an apt-get -s output on stdin.
parse_sim() {
	awk -v prev="$1" '
		BEGIN { while ((getline l < prev) > 0) { split(l, f, "="); have[f[1]] = l } }
		$1 == "Inst" { n = $2; sub(/:.*/, "", n); v = ($3 ~ /^\[/) ? $4 : $3; sub(/^\(/, "", v); have[n] = n "=" v }
		$1 == "Remv" { n = $2; sub(/:.*/, "", n); delete have[n] }
		END { for (n in have) print have[n] }' | sort
}

# simulate IN OUT STEP: the state after install STEP on a root in state IN, as the build's apt
# decides it. apt takes state IN as installed from a status file of those versions' stanzas.
simulate() {
	local in=$1 out=$2 tmp args
	mapfile -t args < <(step_args "$3")
	tmp=$(mktemp -d "$rroot/tmp/pgup.$$/sim.XXXXXX")
	chroot "$rroot" xargs -r apt-cache -o Dir::State::status=/dev/null show <"$in" |
		awk '{ print } /^Package:/ { print "Status: install ok installed" }' >"$tmp/status" ||
		{ log "the stanzas of a state are not in the lists"; return 1; }
	cut -d= -f1 "$in" | sort | comm -23 - "$in.manual" |
		awk -v arch="$arch" '{ print "Package: " $1 "\nArchitecture: " arch "\nAuto-Installed: 1\n" }' >"$tmp/auto"
	chroot "$rroot" apt-get -s -o Dir::Cache::pkgcache= -o Dir::State::status="${tmp#"$rroot"}/status" \
		-o Dir::State::extended_states="${tmp#"$rroot"}/auto" "${args[@]}" >"$tmp/sim" 2>&1 ||
		{ log "simulating '$3' failed:"; tail -20 "$tmp/sim" >&2; return 1; }
	parse_sim "$in" <"$tmp/sim" >"$tmp/state"
	{ cat "$in.manual"; step_pkgs "$3"; } | sort -u >"$tmp/manual"
	mv "$tmp/manual" "$out.manual"
	mv "$tmp/state" "$out"
	rm -rf "$tmp"
}

# simulate_debootstrap OUT: the state debootstrap --variant=minbase would make now: trixie's
# Priority: required packages and apt, with their dependencies, from trixie alone (as debootstrap
# reads no other suite), all marked as installed by request.
simulate_debootstrap() {
	local out=$1 tmp required
	tmp=$(mktemp -d "$rroot/tmp/pgup.$$/sim.XXXXXX")
	echo "deb $mirror trixie main" >"$tmp/sources.list"
	: >"$tmp/status"
	mapfile -t required < <(awk '/^Package:/ { p = $2 } /^Priority: required$/ { print p }' \
		"$rroot"/var/lib/apt/lists/*_dists_trixie_main_binary-"$arch"_Packages | sort -u)
	chroot "$rroot" apt-get -s -o Dir::Etc::SourceList="${tmp#"$rroot"}/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
		-o Dir::Cache::srcpkgcache= -o Dir::Cache::pkgcache= -o Dir::State::status="${tmp#"$rroot"}/status" \
		install "${required[@]}" apt >"$tmp/sim" 2>&1 || { log "simulating debootstrap failed:"; tail -20 "$tmp/sim" >&2; return 1; }
	parse_sim /dev/null <"$tmp/sim" >"$tmp/state"
	cut -d= -f1 "$tmp/state" | sort >"$tmp/manual"
	mv "$tmp/manual" "$out.manual"
	mv "$tmp/state" "$out"
	rm -rf "$tmp"
}

# resolve_chain STEP...: prints the state file after debootstrap and those steps. Each state is
# kept in $states under a hash of all it depends on, so an unmoved mirror costs no simulation.
resolve_chain() {
	local key=$base_id prev step
	prev=$states/$key
	[ -e "$prev" ] || simulate_debootstrap "$prev"
	touch "$prev" "$prev.manual"
	for step in "$@"; do
		key=$(printf '%s\n' "$key" "$all_id" "$step" | sha256sum | cut -c1-32)
		[ -e "$states/$key" ] || simulate "$prev" "$states/$key" "$step"
		touch "$states/$key" "$states/$key.manual"
		prev=$states/$key
	done
	echo "$prev"
}

# shellcheck disable=SC2016 # dpkg-query's own ${...}
root_packages() { chroot "$1" dpkg-query -W -f '${Package}=${Version}\n' | sort; }

# resolve: per image, the state it would be built in today and its key (key_of, state_of), also
# stored in $resolve_dir/keys for --list. base_moved: the resolver root is not what debootstrap
# makes today.
resolve() {
	local i name want steps pids=() order=(0)
	base_id=$(lists_id trixie)
	all_id=$(lists_id "${suites[@]}")
	mkdir -p "$states" "$rroot/tmp/pgup.$$"
	# apt's caches are built once here, not by each of the simulations running side by side.
	chroot "$rroot" apt-cache policy >/dev/null
	mapfile -t steps < <(image_steps "")
	resolve_chain "${base_steps[@]}" "${steps[@]}" >/dev/null
	# The longest chain (the upgrade image) first, then the others backwards, so that two
	# simulations running at once do not compute the same state.
	for ((i = ${#images[@]} - 1; i > 0; i--)); do order+=("$i"); done
	for i in "${order[@]}"; do
		IFS='|' read -r name want _ <<<"${images[$i]}"
		mapfile -t steps < <(image_steps "$want")
		while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n; done
		resolve_chain "${base_steps[@]}" "${steps[@]}" >"$work/state.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i"; done
	for i in "${!images[@]}"; do
		name=${images[$i]%%|*}
		state_of[$name]=$(cat "$work/state.$i")
		key_of[$name]=$({ echo "$script_hash"; cat "${state_of[$name]}"; } | sha256sum | cut -c1-16)
	done
	key_of[pgup/upgrade:latest]=${key_of[${images[0]%%|*}]}
	{
		echo "script $script_hash"
		echo "resolved $(date -u '+%Y-%m-%d %H:%M UTC')"
		for name in "${images[@]%%|*}" pgup/upgrade:latest; do echo "image $name ${key_of[$name]}"; done
	} >"$resolve_dir/keys.new"
	mv "$resolve_dir/keys.new" "$resolve_dir/keys"
	find "$states" -type f -mtime +7 -delete
	base_moved=false
	cmp -s "$states/$base_id" <(root_packages "$rroot") || base_moved=true
}

# mirror_resolution: resolve, re-making the resolver root when trixie's base moved; but once
# only for the same trixie lists, should debootstrap and its simulation ever disagree.
mirror_resolution() {
	local trixie
	resolve
	$base_moved || return 0
	trixie=$(lists_hash trixie)
	if [ "$(cat "$resolve_dir/disagree" 2>/dev/null)" != "$trixie" ]; then
		log "trixie's base packages moved: the resolver root is made again"
		make_resolver
		resolve
		$base_moved || return 0
		echo "$trixie" >"$resolve_dir/disagree"
	fi
	log "WARNING: the resolver root differs from the simulation of debootstrap: $(moves "$states/$base_id" <(root_packages "$rroot"))"
}

is_current() {
	if $resolved; then
		[ "$(label "$1" org.pgup.build-hash)" = "${key_of[$1]}" ]
	else
		[ "$(label "$1" org.pgup.script-hash)" = "$script_hash" ]
	fi
}

# why NAME: why image NAME is built again; for a moved mirror, the packages that moved.
why() {
	if ! docker image inspect "$1" >/dev/null 2>&1; then
		echo "missing"
	elif [ "$(label "$1" org.pgup.script-hash)" != "$script_hash" ]; then
		echo "built by another build.sh"
	elif ! $resolved || is_current "$1"; then
		echo "rebuild asked (--force)"
	else
		echo "the mirror moved: $(moves <(label "$1" org.pgup.packages | tr ' ' '\n' | sort) "${state_of[$1]}")"
	fi
}

# moves OLD NEW: the packages two states differ by, as "name old -> new", "+name new", "-name old".
moves() {
	local out
	out=$(comm -3 "$1" "$2" | awk -F'\t' '
		{ if ($1 != "") { split($1, f, "="); old[f[1]] = f[2] } else { split($2, f, "="); new[f[1]] = f[2] }; seen[f[1]] = 1 }
		END {
			for (n in seen) {
				if (n in old && n in new) print n " " old[n] " -> " new[n]
				else if (n in new) print "+" n " " new[n]
				else print "-" n " " old[n]
			}
		}' | sort -k1,1 | paste -sd, | sed 's/,/, /g')
	echo "${out:-no package changes}"
}

declare -A key_of=() state_of=()
resolved=false
started=$(date +%s)
if [ "$(id -u)" -ne 0 ]; then
	log "WARNING: not root, so the mirror is not asked (the resolver runs in a chroot): images are compared by script hash only"
else
	mkdir -p "$resolve_dir"
	# One build.sh at a time: they would share the resolver and the image tags.
	exec 9>"$resolve_dir/lock"
	flock -n 9 || { log "waiting for another build.sh to finish"; flock 9; }
	work=$(mktemp -d "${TMPDIR:-/var/tmp}/pgup-build.XXXXXX")
	arch=$(dpkg --print-architecture)
	if ! probe_mirror "$work/probe"; then
		log "WARNING: the mirror $mirror cannot be reached: images are compared by script hash only, so they may not be what the mirror serves today"
	else
		[ -e "$rroot/.pgup-resolver" ] || make_resolver
		# This script's configuration, should it have changed since the root was made.
		configure_root "$rroot"
		if refresh_lists "$work/probe"; then
			mirror_resolution
			resolved=true
			log "mirror resolved in $(($(date +%s) - started)) s"
		else
			log "WARNING: the package lists could not be updated (above): images are compared by script hash only"
		fi
	fi
fi
todo=()
for spec in "${images[@]}"; do
	name=${spec%%|*}
	if $force || ! is_current "$name"; then
		log "$name: $(why "$name")"
		todo+=("$spec")
	fi
done
if $check; then
	if list_images; then exit 0; else exit 1; fi
fi
if [ ${#todo[@]} -eq 0 ] && is_current pgup/upgrade:latest; then
	as_of=
	! $resolved || as_of=", mirror as of $(sed -n 's/^resolved //p' "$resolve_dir/keys")"
	log "all images are current (script hash $script_hash$as_of)"
	exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "must run as root (debootstrap and chroot)"; exit 1; }
$resolved || { log "cannot build without the mirror"; exit 1; }

# The base of every image: the resolver root, with its package lists (those the resolution
# read, so the build installs what was resolved), then forky's glibc.
make_base() {
	local root=$work/base
	log "copying the resolver root into $root"
	cp -a "$rroot" "$root"
	rm -rf "$root/tmp/pgup.$$" "$root/.pgup-resolver"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	apt_step "$root" "$work/glibc.log" "${base_steps[0]}"
	# As the official images: en_US.UTF-8 is the default locale of new clusters.
	in_root "$root" localedef -i en_US -c -f UTF-8 en_US.UTF-8
}

# apt_step ROOT LOG STEP: runs an install step in a build root.
apt_step() {
	local args
	mapfile -t args < <(step_args "$3")
	in_root "$1" apt-get -qy "${args[@]}" >"$2" 2>&1 || { tail -30 "$2" >&2; return 1; }
}

# make_root NAME "MAJORS" UID: a copy of the base with those majors installed; its package list
# in $work/packages.
make_root() {
	local name=$1 want=$2 uid=$3 root=$work/root steps step m
	rm -rf "$root"
	cp -a "$work/base" "$root"
	# Fixed ids before postgresql-common would pick one of its own.
	in_root "$root" groupadd -r -g "$uid" postgres
	in_root "$root" useradd -r -u "$uid" -g postgres -d /var/lib/postgresql -s /bin/bash postgres
	mapfile -t steps < <(image_steps "$want")
	for step in "${steps[@]}"; do
		m=${step##*postgresql-}
		[ "$m" = common ] || log "$name: installing postgresql-$m from $(suite_of "$m")"
		apt_step "$root" "$work/install-$m.log" "$step"
		[ "$m" = common ] || [ -x "$root/usr/lib/postgresql/$m/bin/pg_upgrade" ] || { log "postgresql-$m has no pg_upgrade"; return 1; }
	done
	# ssl-cert made a snakeoil key pair: no image ships a private key everyone has.
	rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
	# A package must not have moved glibc away from the base's, or the locale would break.
	[ "$(in_root "$root" env LC_ALL=en_US.UTF-8 locale charmap 2>/dev/null)" = UTF-8 ] ||
		{ log "$name: the en_US.UTF-8 locale does not work"; return 1; }
	root_packages "$root" >"$work/packages"
	cmp -s "$work/packages" "${state_of[$name]}" ||
		log "WARNING: $name holds other packages than resolved: $(moves "${state_of[$name]}" "$work/packages")"
	# Not apt-get clean: in a build root that would empty the shared package cache.
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/* "$root/etc/resolv.conf"
	mkdir -p "$root/var/run/postgresql" "$root/var/lib/postgresql" "$root/docker-entrypoint-initdb.d"
	chown "$uid:$uid" "$root/var/run/postgresql" "$root/var/lib/postgresql"
	chmod 3777 "$root/var/run/postgresql"
	install -m 755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
}

# import_image NAME META: the root as an image, then metadata (a Dockerfile without RUN).
import_image() {
	local name=$1 meta=$2 key=${key_of[$1]} base
	base="pgup/rootfs:$key"
	tar --numeric-owner -C "$work/root" -c . | docker import - "$base" >/dev/null
	mkdir -p "$work/ctx"
	printf 'FROM %s\n%s\nLABEL org.pgup.build-hash="%s" org.pgup.script-hash="%s" org.pgup.packages="%s"\n' \
		"$base" "$meta" "$key" "$script_hash" "$(paste -sd' ' "$work/packages")" >"$work/ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t "$name" "$work/ctx" >/dev/null 2>"$work/docker-build.log" ||
		{ cat "$work/docker-build.log" >&2; return 1; }
	docker rmi "$base" >/dev/null 2>&1 || true
	log "built $name ($(docker image inspect --format '{{.Size}}' "$name" | numfmt --to=iec))"
}

server_meta() {
	local major=$1 pgdata=/var/lib/postgresql/data volume=/var/lib/postgresql/data
	# The 18 images keep the volume one level up, so that a later major can sit beside.
	if [ "$major" -ge 18 ]; then pgdata=/var/lib/postgresql/$major/docker volume=/var/lib/postgresql; fi
	cat <<-EOF
		ENV PG_MAJOR=$major LANG=en_US.utf8 PGDATA=$pgdata PATH=/usr/lib/postgresql/$major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		LABEL org.pgup.pg-major="$major"
		VOLUME $volume
		EXPOSE 5432
		STOPSIGNAL SIGINT
		ENTRYPOINT ["docker-entrypoint.sh"]
		CMD ["postgres"]
	EOF
}

upgrade_meta() {
	cat <<-EOF
		ENV LANG=en_US.utf8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		LABEL org.pgup.majors="$(IFS=,; echo "${majors[*]}")"
		USER postgres
		WORKDIR /var/lib/postgresql
		CMD ["bash"]
	EOF
}

make_base
for spec in "${todo[@]}"; do
	IFS='|' read -r name want uid <<<"$spec"
	make_root "$name" "$want" "$uid"
	if [[ $name == pgup/upgrade:* ]]; then
		import_image "$name" "$(upgrade_meta)"
	else
		import_image "$name" "$(server_meta "$want")"
	fi
done
docker tag pgup/upgrade:13-15-17-18 pgup/upgrade:latest
# Images of earlier builds lost their tags to these; free their space.
docker image prune -f --filter label=org.pgup.build-hash >/dev/null
# The package cache keeps what builds download; what no build used for a month goes.
find "$build_dir/archives" -maxdepth 1 -name '*.deb' -mtime +30 -delete
log "done in $(($(date +%s) - started)) s (script hash $script_hash)"
