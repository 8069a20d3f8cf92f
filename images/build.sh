#!/usr/bin/env bash
# Builds pgup's images from Debian packages only: no registry is needed.
#
#   pgup/upgrade:13-15-17-18 (+ :latest)  PostgreSQL 13, 15, 17 and 18 binaries side by side
#   pgup/postgres:13 :15 :17 :18          servers that behave like the official postgres images
#   pgup/postgres:15-uid70                the data owner is uid 70, as in the Alpine images
#
# One trixie root (debootstrap) is the base of every image; older and newer majors come from
# bullseye, bookworm and forky through apt pinning, so all images share one glibc and one
# collation behaviour. Each image carries the label org.pgup.build-hash: the hash of this
# script and the entrypoint. An image whose label matches is not built again.
#
# Usage: images/build.sh [--force] [--list]
# Environment: PGUP_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              PGUP_BUILD_DIR (default /var/tmp/pgup-images; keeps a package cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mirror=${PGUP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
build_dir=${PGUP_BUILD_DIR:-/var/tmp/pgup-images}
majors=(13 15 17 18)
build_hash=$(cat "$here/build.sh" "$here/docker-entrypoint.sh" | sha256sum | cut -c1-16)

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

log() { printf 'build.sh: %s\n' "$*" >&2; }

is_current() {
	[ "$(docker image inspect --format '{{index .Config.Labels "org.pgup.build-hash"}}' "$1" 2>/dev/null)" = "$build_hash" ]
}

force=false
case ${1:-} in
--force) force=true ;;
--list) printf '%s\n' "${images[@]%%|*}" pgup/upgrade:latest && exit 0 ;;
"") ;;
*) echo "usage: images/build.sh [--force] [--list]" >&2 && exit 2 ;;
esac

todo=()
for spec in "${images[@]}"; do
	name=${spec%%|*}
	if $force || ! is_current "$name"; then todo+=("$spec"); fi
done
if [ ${#todo[@]} -eq 0 ] && is_current pgup/upgrade:latest; then
	log "all images are current (build hash $build_hash)"
	exit 0
fi
[ "$(id -u)" -eq 0 ] || { log "must run as root (debootstrap and chroot)"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/pgup-build.XXXXXX")
mounts=()
cleanup() {
	local m
	for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# Runs a command inside a root with /proc and the shared package cache mounted.
in_root() {
	local root=$1
	shift
	mount -t proc proc "$root/proc" && mounts+=("$root/proc")
	mount --bind "$build_dir/archives" "$root/var/cache/apt/archives" && mounts+=("$root/var/cache/apt/archives")
	local rc=0
	LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$root" "$@" || rc=$?
	umount "$root/var/cache/apt/archives" "$root/proc"
	mounts=("${mounts[@]:0:${#mounts[@]}-2}")
	return $rc
}

make_base() {
	local root=$work/base
	log "debootstrap trixie into $root"
	mkdir -p "$build_dir/archives/partial"
	debootstrap --variant=minbase --cache-dir="$build_dir/archives" trixie "$root" "$mirror" \
		>"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; return 1; }
	cat >"$root/etc/apt/sources.list" <<-EOF
		deb $mirror trixie main
		deb $mirror bookworm main
		deb $mirror bullseye main
		deb $mirror forky main
	EOF
	# forky's Release file is past its Valid-Until date on the mirror.
	cat >"$root/etc/apt/apt.conf.d/90pgup" <<-'EOF'
		APT::Default-Release "trixie";
		Acquire::Check-Valid-Until "false";
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
	in_root "$root" apt-get -q update >"$work/apt-update.log" 2>&1 || { tail -20 "$work/apt-update.log" >&2; return 1; }
	# postgresql-18 from forky needs forky's glibc; every image gets it first, so that all
	# share one glibc (one collation behaviour) and the locale below stays valid.
	in_root "$root" apt-get -qy -t forky install libc6 libc-bin locales >"$work/glibc.log" 2>&1 ||
		{ tail -20 "$work/glibc.log" >&2; return 1; }
	# As the official images: en_US.UTF-8 is the default locale of new clusters.
	in_root "$root" localedef -i en_US -c -f UTF-8 en_US.UTF-8
}

# make_root NAME "MAJORS" UID: a copy of the base with those majors installed.
make_root() {
	local name=$1 want=$2 uid=$3 root=$work/root m
	rm -rf "$root"
	cp -a "$work/base" "$root"
	# Fixed ids before postgresql-common would pick one of its own.
	in_root "$root" groupadd -r -g "$uid" postgres
	in_root "$root" useradd -r -u "$uid" -g postgres -d /var/lib/postgresql -s /bin/bash postgres
	in_root "$root" apt-get -qy install postgresql-common >"$work/common.log" 2>&1 ||
		{ tail -20 "$work/common.log" >&2; return 1; }
	# ssl-cert made a snakeoil key pair: no image ships a private key everyone has.
	rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
	for m in $want; do
		log "$name: installing postgresql-$m from $(suite_of "$m")"
		in_root "$root" apt-get -qy -t "$(suite_of "$m")" install "postgresql-$m" >"$work/install-$m.log" 2>&1 ||
			{ tail -30 "$work/install-$m.log" >&2; return 1; }
		[ -x "$root/usr/lib/postgresql/$m/bin/pg_upgrade" ] || { log "postgresql-$m has no pg_upgrade"; return 1; }
	done
	# A package must not have moved glibc away from the base's, or the locale would break.
	[ "$(in_root "$root" env LC_ALL=en_US.UTF-8 locale charmap 2>/dev/null)" = UTF-8 ] ||
		{ log "$name: the en_US.UTF-8 locale does not work"; return 1; }
	in_root "$root" apt-get -q clean
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* "$root/etc/resolv.conf"
	mkdir -p "$root/var/run/postgresql" "$root/var/lib/postgresql" "$root/docker-entrypoint-initdb.d"
	chown "$uid:$uid" "$root/var/run/postgresql" "$root/var/lib/postgresql"
	chmod 3777 "$root/var/run/postgresql"
	install -m 755 "$here/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
}

# import_image NAME: the root as an image, then metadata (a Dockerfile without RUN).
import_image() {
	local name=$1 meta=$2 base
	base="pgup/rootfs:$build_hash"
	tar --numeric-owner -C "$work/root" -c . | docker import - "$base" >/dev/null
	mkdir -p "$work/ctx"
	printf 'FROM %s\n%s\nLABEL org.pgup.build-hash="%s"\n' "$base" "$meta" "$build_hash" >"$work/ctx/Dockerfile"
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

started=$(date +%s)
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
log "done in $(($(date +%s) - started)) s (build hash $build_hash)"
