#!/usr/bin/env bash
# Builds pgup's server images from Debian packages only: no registry is needed.
#
#   pgup/postgres:13 :15 :17 :18   servers that behave like the official postgres images
#   pgup/postgres:19               the same from Debian experimental (a release candidate until
#                                  Debian ships 19.0), on sid like 18: its packages need sid's
#                                  glibc and ICU
#   pgup/postgres:15-uid70         the data owner is uid 70, as in the Alpine images
#   pgup/postgis:13 :17            the server with PostGIS 3
#   pgup/pgvector:17 :18           the server with pgvector
#   pgup/upgrade:latest            with PGUP_BIN: 17 holding 13 too, pgup its entrypoint
#
# As in the official images, each major sits on the Debian release that packages it (13
# bullseye, 15 bookworm, 17 trixie, 18 and 19 sid), with that release's glibc, ICU, OpenSSL and LLVM.
# Each release is debootstrapped once into $PGUP_BUILD_DIR/<release>/root, the base of its
# images and their resolver (below); an image is a copy of it with the server installed by the
# release's own apt, an extension image a copy of that with the extension installed. The four
# releases are resolved and built side by side.
#
# An image is built again only when it would come out different. Before building, the script
# asks the mirror what it would install today: in each release's root, with the same apt,
# configuration and package lists as a build, `apt-get -s` plays debootstrap's minbase and every
# install of every image. An image's label org.pgup.build-hash is the hash of this script, the
# entrypoint and that list of package versions, so a moved mirror rebuilds the images it moves,
# and only those; a build then installs from those very lists. When the mirror cannot be
# reached, images are compared by script hash alone (with a warning). Every image also carries
# org.pgup.packages (each package=version it holds) and org.pgup.debian-release.
#
# Usage: images/build.sh [--force | --check | --list | --upgrade-image]
#   --force  build every image again
#   --check  ask the mirror, say what would be built and why, print what --list prints; build
#            nothing; exit 1 unless all images are current
#   --list   a line per image: its name, its state (current, outdated, missing; unchecked when
#            no resolution is stored yet), its release and the versions that matter; reads
#            labels only, offline
#   --upgrade-image  only pgup/upgrade:latest, from the server images here (PGUP_BIN needed)
# Environment: PGUP_BIN (a pgup binary: assembles pgup/upgrade:latest with it),
#              PGUP_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              PGUP_BUILD_DIR (default /var/tmp/pgup-images; keeps the roots and package caches).
set -euo pipefail
shopt -s inherit_errexit
# One collation for every sort and comm below, and for the commands run in the roots.
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mirror=${PGUP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
build_dir=${PGUP_BUILD_DIR:-/var/tmp/pgup-images}
releases=(bullseye bookworm trixie sid)
script_hash=$(cat "$here/build.sh" "$here/docker-entrypoint.sh" | sha256sum | cut -c1-16)

release_of() {
	case $1 in
	13) echo bullseye ;;
	15) echo bookworm ;;
	17) echo trixie ;;
	18 | 19) echo sid ;;
	*) echo "no Debian release known for PostgreSQL $1" >&2 && return 1 ;;
	esac
}

# suites_of RELEASE: the suites its root installs from. 19 is only in experimental, whose
# packages apt takes only when no other suite has them.
suites_of() {
	case $1 in
	sid) echo sid experimental ;;
	*) echo "$1" ;;
	esac
}

# name|major|uid|extension package: every image this script makes.
images=(
	"pgup/postgres:13|13|999|"
	"pgup/postgis:13|13|999|postgresql-13-postgis-3"
	"pgup/postgres:15|15|999|"
	"pgup/postgres:15-uid70|15|70|"
	"pgup/postgres:17|17|999|"
	"pgup/postgis:17|17|999|postgresql-17-postgis-3"
	"pgup/pgvector:17|17|999|postgresql-17-pgvector"
	"pgup/postgres:18|18|999|"
	"pgup/pgvector:18|18|999|postgresql-18-pgvector"
	"pgup/postgres:19|19|999|"
)

# image_steps MAJOR EXTENSION: the apt installs after debootstrap, a line of packages each. A
# build runs exactly these, the resolver simulates exactly these.
image_steps() {
	local jit= pin=
	# From 18 on Debian splits JIT into its own package, which the official images install.
	[ "$1" -lt 18 ] || jit=" postgresql-$1-jit"
	# 19's client library is only in experimental too, which apt does not take by itself.
	[ "$1" -lt 19 ] || pin=" libpq5/experimental"
	echo "locales postgresql-$1$jit$pin"
	[ -z "$2" ] || echo "$2"
}

log() { printf 'build.sh: %s\n' "$*" >&2; }

# pgup/upgrade:latest, with PGUP_BIN naming a pgup binary (scripts/setup.sh builds one): the 17
# server with the 13 programs and that pgup as its entrypoint (docs/in-container.md), assembled
# by pgup as it assembles every toolbox (the tests' 13 to 17 toolbox is this one); reused while
# the server images and the binary stay the same. More majors: docs/in-container.md.
upgrade_image() {
	"$PGUP_BIN" image assemble --old pgup/postgres:13 --new pgup/postgres:17 --tag pgup/upgrade:latest >/dev/null
	log "pgup/upgrade:latest holds PostgreSQL 13 and 17"
}

label() { docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null; }

# --list: the state and the versions that matter of each image, from labels and from the keys of
# the last resolution of each release (which a run as root stores): no network, no root.
list_images() {
	local f line name major state since='' all=true
	declare -A known=()
	for f in "$build_dir"/*/keys; do
		if [ -r "$f" ] && [ "$(sed -n 's/^script //p' "$f")" = "$script_hash" ]; then
			while read -r line; do known[${line%% *}]=${line#* }; done < <(sed -n 's/^image //p' "$f")
			line=$(sed -n 's/^resolved //p' "$f")
			[[ -n $since && $since < $line ]] || since=$line
		fi
	done
	if [ -n "$since" ]; then
		log "states against the mirror as resolved at $since or later (build.sh run as root resolves it again)"
	else
		log "no resolution of the mirror stored for this build.sh yet: 'unchecked' images match the scripts; run build.sh --check as root"
	fi
	for spec in "${images[@]}"; do
		IFS='|' read -r name major _ <<<"$spec"
		if ! docker image inspect "$name" >/dev/null 2>&1; then
			printf '%-24s %-9s %s\n' "$name" missing "$(release_of "$major")"
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
		printf '%-24s %-9s %-8s %s\n' "$name" "$state" "$(label "$name" org.pgup.debian-release)" "$(key_versions "$name")"
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
		$1 ~ /^postgresql-[0-9]+-(postgis-3|pgvector)$/ { print 2, $0; next }
		$1 == "postgresql-common" { print 3, $0; next }
		$1 == "libc6" { print 4, $0; next }
		$1 ~ /^libicu[0-9]/ { print 5, $0; next }
		$1 ~ /^libssl[0-9]/ { print 6, $0; next }
		$1 ~ /^libllvm[0-9]/ { print 7, $0 }' | sort -k1,1n -k2,2V | cut -d' ' -f2 | paste -sd' '
}

force=false check=false
case ${1:-} in
--force) force=true ;;
--check) check=true ;;
--list)
	list_images || true
	exit 0
	;;
--upgrade-image)
	[ -n "${PGUP_BIN:-}" ] || { echo "images/build.sh --upgrade-image: set PGUP_BIN to a pgup binary" >&2 && exit 2; }
	upgrade_image
	exit 0
	;;
"") ;;
*) echo "usage: images/build.sh [--force | --check | --list | --upgrade-image]" >&2 && exit 2 ;;
esac

work=
cleanup() {
	local pids
	mapfile -t pids < <(jobs -pr)
	[ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
	[ -n "$work" ] || return 0
	# The mounts of the build roots (/proc, the package cache), wherever a job left them.
	awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# What follows runs in a job per release, with these set by run_release: rel (its name), rdir
# ($build_dir/$rel), rroot (its root, the resolver and base of its images), states, archives
# (its package cache), mine (its images' specs), resolved, state_of, key_of.

# Runs a command inside a build root with /proc and the release's package cache mounted.
in_root() {
	local root=$1 rc=0
	shift
	mount -t proc proc "$root/proc"
	mount --bind "$archives" "$root/var/cache/apt/archives"
	DEBIAN_FRONTEND=noninteractive chroot "$root" "$@" || rc=$?
	umount "$root/var/cache/apt/archives" "$root/proc"
	return $rc
}

# configure_root ROOT: the apt and dpkg set-up of the release's root (all of it before any
# install, so the resolver plays the steps under the rules the builds follow).
configure_root() {
	local root=$1
	local suite
	for suite in $(suites_of "$rel"); do echo "deb $mirror $suite main"; done >"$root/etc/apt/sources.list"
	# sid's Release file is past its Valid-Until date on a mirror that stopped following it.
	cat >"$root/etc/apt/apt.conf.d/90pgup" <<-'EOF'
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

# make_base: a fresh debootstrap of the release as its root, keeping the package lists of the
# one it replaces, so that apt-get update stays incremental. debootstrap checks the Release
# file with the host's debian-archive-keyring; apt in the root then uses the release's own.
make_base() {
	local new=$rdir/root.new dlog=$work/debootstrap-$rel.log
	command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; return 1; }
	log "debootstrap $rel into $rroot"
	rm -rf "$new"
	if ! debootstrap --variant=minbase --cache-dir="$archives" "$rel" "$new" "$mirror" >"$dlog" 2>&1; then
		tail -20 "$dlog" >&2
		! grep -q 'unknown key' "$dlog" ||
			log "$rel is signed by a key the host does not know: update the host's debian-archive-keyring"
		return 1
	fi
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

# probe_mirror: each release's InRelease as the mirror serves it now, in $work/probe; fails
# when the mirror cannot be reached.
probe_mirror() {
	local r suite
	mkdir -p "$work/probe"
	for r in "${releases[@]}"; do
		for suite in $(suites_of "$r"); do
			wget -nv -T 20 -t 1 -O "$work/probe/$suite" "$mirror/dists/$suite/InRelease" 2>"$work/wget.log" ||
				{ log "$(tail -1 "$work/wget.log")"; return 1; }
		done
	done
}

# refresh_lists: apt-get update in the root unless its lists came from this mirror and from the
# very InRelease the probe fetched (compared byte for byte with the one apt verified: nothing
# fetched by wget is trusted). apt checks the signatures with the root's debian-archive-keyring.
refresh_lists() {
	local suite current=true
	for suite in $(suites_of "$rel"); do
		cmp -s "$work/probe/$suite" "$rroot"/var/lib/apt/lists/*_dists_"$suite"_InRelease || current=false
	done
	if [ "$(cat "$rroot/.pgup-resolver")" = "$mirror" ] && $current; then
		return 0
	fi
	log "$rel: its package lists are not the mirror's: apt-get update"
	cp -L /etc/resolv.conf "$rroot/etc/resolv.conf" 2>/dev/null || true
	chroot "$rroot" apt-get -q --error-on=any update >"$work/apt-update-$rel.log" 2>&1 ||
		{ cat "$work/apt-update-$rel.log" >&2; return 1; }
	echo "$mirror" >"$rroot/.pgup-resolver"
}

# lists_id: what a simulation depends on besides its steps: this script, the root's own packages
# (its apt) and its package lists: the signed InRelease by content, the indexes by size and date
# (apt rewrites an unchanged InRelease, never an unchanged index).
lists_id() {
	local f suite
	{
		echo "$script_hash"
		sha256sum <"$rroot/var/lib/dpkg/status"
		for f in $(for suite in $(suites_of "$rel"); do echo "$rroot"/var/lib/apt/lists/*_dists_"$suite"_*; done); do
			case $f in
			*_InRelease) sha256sum <"$f" ;;
			*) stat -c '%n %s %Y' "$f" ;;
			esac
		done
	} | sha256sum | cut -c1-32
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

# simulate IN OUT PACKAGE...: the state after installing those packages on a root in state IN, as
# the build's apt decides it. apt takes state IN as installed from a status file of those
# versions' stanzas.
simulate() {
	local in=$1 out=$2 tmp
	shift 2
	tmp=$(mktemp -d "$rroot/tmp/pgup.XXXXXX")
	chroot "$rroot" xargs -r apt-cache -o Dir::State::status=/dev/null show <"$in" |
		awk '{ print } /^Package:/ { print "Status: install ok installed" }' >"$tmp/status" ||
		{ log "$rel: the stanzas of a state are not in the lists"; return 1; }
	cut -d= -f1 "$in" | sort | comm -23 - "$in.manual" |
		awk -v arch="$arch" '{ print "Package: " $1 "\nArchitecture: " arch "\nAuto-Installed: 1\n" }' >"$tmp/auto"
	chroot "$rroot" apt-get -s -o Dir::Cache::pkgcache= -o Dir::State::status="${tmp#"$rroot"}/status" \
		-o Dir::State::extended_states="${tmp#"$rroot"}/auto" install "$@" >"$tmp/sim" 2>&1 ||
		{ log "$rel: simulating the install of $* failed:"; tail -20 "$tmp/sim" >&2; return 1; }
	parse_sim "$in" <"$tmp/sim" >"$tmp/state"
	{ cat "$in.manual"; printf '%s\n' "${@%%/*}"; } | sort -u >"$out.manual"
	mv "$tmp/state" "$out"
	rm -rf "$tmp"
}

# simulate_debootstrap OUT: the state debootstrap --variant=minbase makes now: the release's
# Priority: required packages and apt (and usr-is-merged on bookworm, as debootstrap's
# scripts/debian-common adds it) with their dependencies, all marked as installed by request.
simulate_debootstrap() {
	local required
	mapfile -t required < <(awk '/^Package:/ { p = $2 } /^Priority: required$/ { print p }' \
		"$rroot"/var/lib/apt/lists/*_dists_"$rel"_main_binary-"$arch"_Packages | sort -u)
	[ "$rel" != bookworm ] || required+=(usr-is-merged)
	: >"$states/empty"
	: >"$states/empty.manual"
	simulate "$states/empty" "$1.new" "${required[@]}" apt
	cut -d= -f1 "$1.new" | sort >"$1.manual"
	mv "$1.new" "$1"
	rm -f "$1.new.manual"
}

# resolve_chain STEP...: prints the state file after debootstrap and those steps. Each state is
# kept in $states under a hash of all it depends on, so an unmoved mirror costs no simulation.
resolve_chain() {
	local key=$base_id prev step pkgs
	prev=$states/$key
	[ -e "$prev" ] || simulate_debootstrap "$prev"
	touch "$prev" "$prev.manual"
	for step in "$@"; do
		key=$(printf '%s\n' "$key" "$step" | sha256sum | cut -c1-32)
		read -ra pkgs <<<"$step"
		[ -e "$states/$key" ] || simulate "$prev" "$states/$key" "${pkgs[@]}"
		touch "$states/$key" "$states/$key.manual"
		prev=$states/$key
	done
	echo "$prev"
}

# shellcheck disable=SC2016 # dpkg-query's own ${...}
root_packages() { chroot "$1" dpkg-query -W -f '${Package}=${Version}\n' | sort; }

# resolve: per image of the release, the state it would be built in today (state_of) and its key
# (key_of), also stored in $rdir/keys for --list. base_moved: the root is not what debootstrap
# makes today.
resolve() {
	local spec name major ext steps
	base_id=$(lists_id)
	mkdir -p "$states" "$rroot/tmp"
	for spec in "${mine[@]}"; do
		IFS='|' read -r name major _ ext <<<"$spec"
		mapfile -t steps < <(image_steps "$major" "$ext")
		state_of[$name]=$(resolve_chain "${steps[@]}")
		key_of[$name]=$({ echo "$script_hash"; cat "${state_of[$name]}"; } | sha256sum | cut -c1-16)
	done
	{
		echo "script $script_hash"
		echo "resolved $(date -u '+%Y-%m-%d %H:%M UTC')"
		for spec in "${mine[@]}"; do echo "image ${spec%%|*} ${key_of[${spec%%|*}]}"; done
	} >"$rdir/keys.new"
	mv "$rdir/keys.new" "$rdir/keys"
	find "$states" -type f -mtime +7 -delete
	base_moved=false
	cmp -s "$states/$base_id" <(root_packages "$rroot") || base_moved=true
}

# mirror_resolution: resolve, re-making the root when the release's base moved; but once only for
# the same lists, should debootstrap and its simulation ever disagree.
mirror_resolution() {
	resolve
	$base_moved || return 0
	if [ "$(cat "$rdir/disagree" 2>/dev/null)" != "$base_id" ]; then
		log "$rel: its base packages moved: its root is made again"
		make_base
		resolve
		$base_moved || return 0
		echo "$base_id" >"$rdir/disagree"
	fi
	log "WARNING: $rel: the root differs from the simulation of debootstrap: $(moves "$states/$base_id" <(root_packages "$rroot"))"
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

# apt_step ROOT STEP: runs an install step in a build root.
apt_step() {
	local pkgs
	read -ra pkgs <<<"$2"
	log "$rel: installing ${pkgs[*]}"
	in_root "$1" apt-get -qy install "${pkgs[@]}" >"$work/apt-$rel.log" 2>&1 || { tail -30 "$work/apt-$rel.log" >&2; return 1; }
}

# make_server ROOT MAJOR UID STEP: a copy of the release's root with the server installed by STEP.
make_server() {
	local root=$1 major=$2 uid=$3
	cp -a "$rroot" "$root"
	rm -f "$root/.pgup-resolver"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
	# Fixed ids before postgresql-common would pick one of its own.
	in_root "$root" groupadd -r -g "$uid" postgres
	in_root "$root" useradd -r -u "$uid" -g postgres -d /var/lib/postgresql -s /bin/bash postgres
	apt_step "$root" "$4"
	[ -x "$root/usr/lib/postgresql/$major/bin/pg_upgrade" ] || { log "postgresql-$major has no pg_upgrade"; return 1; }
	# As the official images: en_US.UTF-8 is the default locale of new clusters.
	in_root "$root" localedef -i en_US -c -f UTF-8 en_US.UTF-8
	[ "$(in_root "$root" env LC_ALL=en_US.UTF-8 locale charmap 2>/dev/null)" = UTF-8 ] ||
		{ log "$rel: the en_US.UTF-8 locale does not work"; return 1; }
	# ssl-cert made a snakeoil key pair: no image ships a private key everyone has.
	rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
	mkdir -p "$root/var/run/postgresql" "$root/var/lib/postgresql" "$root/docker-entrypoint-initdb.d"
	chown "$uid:$uid" "$root/var/run/postgresql" "$root/var/lib/postgresql"
	chmod 3777 "$root/var/run/postgresql"
	install -m 755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
}

# import_image NAME ROOT MAJOR: the root as an image, without its package lists, caches and logs
# (they stay in the root for the images built on it), then metadata (a Dockerfile without RUN).
import_image() {
	local name=$1 root=$2 key=${key_of[$1]} tag=pgup/rootfs:$rel-$$ ctx=$work/ctx-$rel
	root_packages "$root" >"$work/packages-$rel"
	cmp -s "$work/packages-$rel" "${state_of[$name]}" ||
		log "WARNING: $name holds other packages than resolved: $(moves "${state_of[$name]}" "$work/packages-$rel")"
	tar --numeric-owner -C "$root" --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*.bin' \
		--exclude='./var/log/*' --exclude='./tmp/*' --exclude=./etc/resolv.conf -c . | docker import - "$tag" >/dev/null
	mkdir -p "$ctx"
	{
		echo "FROM $tag"
		server_meta "$3"
		printf 'LABEL org.pgup.build-hash="%s" org.pgup.script-hash="%s" org.pgup.debian-release="%s" org.pgup.packages="%s"\n' \
			"$key" "$script_hash" "$rel" "$(paste -sd' ' "$work/packages-$rel")"
	} >"$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t "$name" "$ctx" >/dev/null 2>"$work/docker-build-$rel.log" ||
		{ cat "$work/docker-build-$rel.log" >&2; return 1; }
	docker rmi "$tag" >/dev/null 2>&1 || true
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

# build: the due images of the release; a server's root is made once, then each extension
# image installs its package in a copy of it.
build() {
	local spec name major uid ext steps server root
	for spec in "${todo[@]}"; do
		IFS='|' read -r name major uid ext <<<"$spec"
		mapfile -t steps < <(image_steps "$major" "$ext")
		server=$work/$rel-$major-$uid
		[ -d "$server" ] || make_server "$server" "$major" "$uid" "${steps[0]}"
		root=$server
		if [ -n "$ext" ]; then
			root=$work/$rel-ext
			rm -rf "$root"
			cp -a "$server" "$root"
			apt_step "$root" "${steps[1]}"
		fi
		import_image "$name" "$root" "$major"
	done
	rm -rf "$work/$rel"-*
}

# run_release RELEASE: resolves one release against the mirror, says which of its images are
# due and why (listed in $work/due.RELEASE), and builds them.
run_release() {
	local spec name major todo=() t0
	t0=$(date +%s)
	rel=$1 rdir=$build_dir/$1 rroot=$build_dir/$1/root states=$build_dir/$1/states archives=$build_dir/archives/$1
	mine=() resolved=false
	declare -gA state_of=() key_of=()
	for spec in "${images[@]}"; do
		IFS='|' read -r _ major _ <<<"$spec"
		[ "$(release_of "$major")" != "$rel" ] || mine+=("$spec")
	done
	if $online; then
		mkdir -p "$states" "$archives/partial"
		[ -e "$rroot/.pgup-resolver" ] || make_base
		# This script's configuration, should it have changed since the root was made.
		configure_root "$rroot"
		if refresh_lists; then
			mirror_resolution
			resolved=true
			log "$rel: resolved in $(($(date +%s) - t0)) s"
		else
			log "WARNING: $rel: the package lists could not be updated (above): its images are compared by script hash only"
		fi
	fi
	for spec in "${mine[@]}"; do
		name=${spec%%|*}
		if $force || ! is_current "$name"; then
			log "$name: $(why "$name")"
			todo+=("$spec")
		fi
	done
	[ ${#todo[@]} -gt 0 ] || return 0
	printf '%s\n' "${todo[@]%%|*}" >"$work/due.$rel"
	! $check || return 0
	[ "$(id -u)" -eq 0 ] || { log "$rel: must run as root to build (debootstrap and chroot)"; return 1; }
	$resolved || { log "$rel: cannot build without the mirror"; return 1; }
	build
	log "$rel: done in $(($(date +%s) - t0)) s"
}

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/pgup-build.XXXXXX")
online=false
if [ "$(id -u)" -ne 0 ]; then
	log "WARNING: not root, so the mirror is not asked (the resolvers run in a chroot): images are compared by script hash only"
else
	mkdir -p "$build_dir"
	# One build.sh at a time: they would share the roots and the image tags.
	exec 9>"$build_dir/lock"
	flock -n 9 || { log "waiting for another build.sh to finish"; flock 9; }
	# What build.sh kept before each image had its own release: one trixie resolver, one cache.
	if [ -d "$build_dir/apt-resolve" ]; then
		rm -rf "$build_dir/apt-resolve"
		find "$build_dir/archives" -maxdepth 1 -name '*.deb' -delete 2>/dev/null || true
	fi
	arch=$(dpkg --print-architecture)
	if probe_mirror; then
		online=true
	else
		log "WARNING: the mirror $mirror cannot be reached: images are compared by script hash only, so they may not be what the mirror serves today"
	fi
fi
declare -A pids=()
for r in "${releases[@]}"; do
	run_release "$r" &
	pids[$r]=$!
done
ok=true
for r in "${releases[@]}"; do wait "${pids[$r]}" || { log "$r: failed (above)"; ok=false; }; done
if $check; then
	if list_images && $ok; then exit 0; else exit 1; fi
fi
$ok || exit 1
if ! compgen -G "$work/due.*" >/dev/null; then
	log "all images are current (script hash $script_hash)"
	[ -z "${PGUP_BIN:-}" ] || upgrade_image
	exit 0
fi
# Images of earlier builds lost their tags to these; free their space.
docker image prune -f --filter label=org.pgup.build-hash >/dev/null
# The package caches keep what builds download; what no build read for a month goes (dpkg reads
# each deb it installs, which moves its atime on relatime mounts).
find "$build_dir/archives" -name '*.deb' -atime +30 -delete
[ -z "${PGUP_BIN:-}" ] || upgrade_image
log "done in $(($(date +%s) - started)) s (script hash $script_hash)"
