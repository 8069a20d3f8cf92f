#!/usr/bin/env bash
# Benchmark: pgup upgrade against the same job done by hand, and against dump/restore, on
# one machine, in one run, contenders alternating, each repeated; prints medians and ratios.
#
#   scripts/bench.sh --quick     one size (0.5 GB), one repetition, downtime of A and C only:
#                                a few minutes (CI)
#   scripts/bench.sh --full      0, 0.5, 1, 2, 4 GB and 1,000 / 10,000 tables, 3 repetitions
#                                (about 95 minutes)
#   PGUP_BENCH_SIZES, PGUP_BENCH_TABLES, PGUP_BENCH_REPS, PGUP_BENCH_CONTENDERS override a
#   mode's sets.
#
# Contenders (13 → 17, every one from a fresh copy of the same stopped cluster):
#   a  pgup upgrade, default safe mode (backup kept)
#   b  by hand: cp -a safety copy + initdb + pg_upgrade --link + start, vacuumdb
#      --analyze-in-stages, stop, swap (in the upgrade image via docker run)
#   c  pgup upgrade --mode link --no-backup        c0  the same by hand without the copy
#   d  pg_dumpall | psql into a fresh 17 server
#   e  pgup upgrade --mode clone on a loop-mounted XFS with reflinks (when the machine allows)
# Downtime, on pgbench clusters of their own (--quick: 0.5 GB; --full: 1, 4 and 8 GB, each
# with and without data checksums) whose server runs and takes writes (pgbench -n -R 50 -c 2)
# until the stop, from the start of the stop to the new major's first answer:
#   A  pgup upgrade --new-image (safe mode: the backup copied while serving, made exact after
#      the stop); every run is frozen once the backup is renamed, the backup and the stopped
#      cluster hashed (tree and contents) and compared, the freeze taken off the downtime
#   C  the same with --mode link --no-backup
#   B  by hand: docker stop, cp -a, initdb, pg_upgrade --link, a new 17 container
#   PGUP_BENCH_DOWNTIME overrides the contenders ("" skips them), PGUP_BENCH_DOWN_SIZES the
#   sizes, PGUP_BENCH_CHECKSUMS the variants ("no yes").
# To 19 (18 → 19, the 18 images' layout, a stopped cluster; --full: 1 GB and 10,000 tables;
# PGUP_BENCH_19_SIZES, PGUP_BENCH_19_TABLES override them, "" skips):
#   s  pgup upgrade, default safe mode (backup kept; pg_upgrade --swap, --transfer auto)
#   l  the same with --transfer link
#   h  by hand: cp -a safety copy, initdb 19 in 19/docker, pg_upgrade --link --jobs 2, start,
#      vacuumdb --all --analyze-only --missing-stats-only (what pgup gathers on a private
#      start), stop
#   each with pg_upgrade's own time (pgup's "upgrading" step; the command alone by hand).
# Output: tables on stdout (also written to target/bench/results.md) and pgup's peak RSS.
set -euo pipefail
# A failure inside $(...) (making a template, say) stops the run instead of timing nothing.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

mode=${1:---quick}
case $mode in
--quick) sizes=(0.5) tables=() reps=1 down_sizes=(0.5) checksums=(no) downs=(A C) sizes19=() tables19=() ;;
--full) sizes=(0 0.5 1 2 4) tables=(1000 10000) reps=3 down_sizes=(1 4 8) checksums=(no yes) downs=(A B C) sizes19=(1) tables19=(10000) ;;
*) echo "usage: scripts/bench.sh [--quick|--full]" >&2 && exit 2 ;;
esac
# A part of a run: PGUP_BENCH_SIZES="1 2" PGUP_BENCH_TABLES="" PGUP_BENCH_REPS=1.
read -ra sizes <<<"${PGUP_BENCH_SIZES-${sizes[*]}}"
read -ra tables <<<"${PGUP_BENCH_TABLES-${tables[*]:-}}"
read -ra down_sizes <<<"${PGUP_BENCH_DOWN_SIZES-${down_sizes[*]}}"
read -ra checksums <<<"${PGUP_BENCH_CHECKSUMS-${checksums[*]}}"
read -ra downs <<<"${PGUP_BENCH_DOWNTIME-${downs[*]}}"
read -ra sizes19 <<<"${PGUP_BENCH_19_SIZES-${sizes19[*]:-}}"
read -ra tables19 <<<"${PGUP_BENCH_19_TABLES-${tables19[*]:-}}"
reps=${PGUP_BENCH_REPS:-$reps}

# The release build compiles while setup builds the images (mostly waiting on the mirror).
release_log=$(mktemp)
cargo build --release --locked -q >"$release_log" 2>&1 &
release_pid=$!
bash scripts/setup.sh >/dev/null
wait "$release_pid" || { cat "$release_log" >&2; rm -f "$release_log"; exit 1; }
rm -f "$release_log"
pgup=$PWD/target/release/pgup
# The toolbox pgup assembles from the two server images: made before any clock starts, and
# the image the by-hand job runs in.
assembled() {
	"$pgup" image assemble --old "pgup/postgres:$1" --new "pgup/postgres:$2" --json |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["image"])'
}
toolbox=$(assembled 13 17)
# The by-hand job to 19 runs in the 18/19 toolbox, assembled when a set to 19 runs.
toolbox19=
out=target/bench
mkdir -p "$out"
results=$out/results.tsv downtimes=$out/downtime.tsv to19=$out/to19.tsv
: >"$results"
: >"$downtimes"
: >"$to19"
export POSTGRES_PASSWORD=bench-$RANDOM$RANDOM
prefix=pgup-bench-$$
vols=/var/lib/docker/volumes

cleanup() {
	docker ps -aq --filter "name=$prefix" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
	docker volume ls -q --filter "name=$prefix" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
	if mountpoint -q "$out/xfs" 2>/dev/null; then umount "$out/xfs"; fi
	rm -f "$out/xfs.img"
}
trap cleanup EXIT

log() { printf 'bench: %s\n' "$*" >&2; }
now() { date +%s.%N; }
# Seconds from $1 to $2 (two `now`s).
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Waits for process $1 (a child of this shell) to end, keeping its peak RSS (kB) in
# $peak_kb; fails as it did.
watch_rss() {
	local pid=$1 kb
	peak_kb=0
	while kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$kb" ]; do
		[ "$kb" -gt "$peak_kb" ] && peak_kb=$kb
		sleep 0.05
	done
	wait "$pid"
}

# Runs a command (its output discarded) and prints its peak RSS (kB) when it ends.
peak_rss() {
	"$@" >/dev/null 2>&1 &
	watch_rss $!
	echo "$peak_kb"
}

# Where the images of major $1 mount their volume: PGDATA itself up to 17, its parent (PGDATA
# in <major>/docker) from 18 on.
mount_of() { if [ "$1" -ge 18 ]; then echo /var/lib/postgresql; else echo /var/lib/postgresql/data; fi; }

# A stopped PostgreSQL cluster of major $5 (default 13) of about SIZE GB (pgbench) or with N
# tables, in volume $1; $4 = yes: with data checksums (18's images make them by default).
make_template() {
	local vol=$1 kind=$2 amount=$3 sums=${4:-no} major=${5:-13} c=$prefix-make initdb=()
	[ "$sums" = yes ] && initdb=(-e POSTGRES_INITDB_ARGS=--data-checksums)
	docker volume create "$vol" >/dev/null
	docker run -d --name "$c" -e POSTGRES_PASSWORD "${initdb[@]}" -v "$vol:$(mount_of "$major")" "pgup/postgres:$major" >/dev/null
	until docker exec "$c" pg_isready -q -h 127.0.0.1 2>/dev/null; do sleep 0.5; done
	if [ "$kind" = gb ]; then
		# pgbench scale 1 is about 15 MB on disk.
		local scale
		scale=$(awk -v g="$amount" 'BEGIN { s = int(g * 1024 / 15); print (s < 1 ? 1 : s) }')
		[ "$amount" = 0 ] || docker exec "$c" pgbench -q -i -s "$scale" -U postgres postgres >/dev/null 2>&1
	else
		# A commit every 500 tables: one transaction runs out of lock slots after about 3,000.
		docker exec "$c" psql -q -v ON_ERROR_STOP=1 -U postgres -c "DO \$\$ BEGIN FOR i IN 1..$amount LOOP
			EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i);
			EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text) FROM generate_series(1, 10) g', i);
			IF i % 500 = 0 THEN COMMIT; END IF;
			END LOOP; END \$\$;" >/dev/null
		local made
		made=$(docker exec "$c" psql -qtA -U postgres -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
		[ "$made" = "$amount" ] || { log "made $made tables of $amount"; exit 1; }
	fi
	# A clean shutdown: pg_upgrade (and pgup) refuse a cluster that was not shut down cleanly.
	docker stop -t 120 "$c" >/dev/null
	docker rm "$c" >/dev/null
	du -sb "$vols/$vol/_data" | cut -f1
}

# A fresh copy of the template in a new volume, with a stopped container of major $3
# (default 13) on it.
fresh() {
	local template=$1 name=$2 major=${3:-13}
	docker volume create "$name" >/dev/null
	rmdir "$vols/$name/_data"
	cp -a "$vols/$template/_data" "$vols/$name/_data"
	# On disk before the clock starts, as a stopped cluster's data is: no contender pays for
	# flushing the copy.
	sync
	docker create --name "$name" -e POSTGRES_PASSWORD -v "$name:$(mount_of "$major")" "pgup/postgres:$major" >/dev/null
}

drop() {
	docker rm -f -v "$1" >/dev/null 2>&1 || true
	docker ps -aq --filter "name=$1-pgup" | xargs -r docker rm -f >/dev/null 2>&1 || true
	docker volume rm -f "$1" >/dev/null 2>&1 || true
}

# By hand, as an operator following the manual procedure would, in the upgrade toolbox;
# statistics ($3 = no: left for after the new server serves) on a private start.
by_hand() {
	local name=$1 copy=$2 stats=${3:-yes} w=$vols/$1
	[ "$copy" = yes ] && cp -a "$w/_data" "$w/backup"
	install -d -o 999 -g 999 -m 700 "$w/new"
	docker run --rm --network none -u 999:999 -e STATS="$stats" -v "$w:/w" --tmpfs /tmp:uid=999 -w /tmp "$toolbox" bash -ec '
		# Checksums as the old cluster has them, or pg_upgrade refuses.
		sums=$(/usr/lib/postgresql/13/bin/pg_controldata /w/_data | awk -F: "/checksum version/ { print \$2 + 0 }")
		k=(); [ "$sums" = 0 ] || k=(--data-checksums)
		/usr/lib/postgresql/17/bin/initdb -D /w/new -U postgres -A trust --encoding=UTF8 --lc-collate=en_US.utf8 --lc-ctype=en_US.utf8 "${k[@]}" >/dev/null
		/usr/lib/postgresql/17/bin/pg_upgrade -b /usr/lib/postgresql/13/bin -B /usr/lib/postgresql/17/bin \
			-d /w/_data -D /w/new -U postgres --link --jobs 2 -s /tmp >/dev/null
		cp /w/_data/pg_hba.conf /w/_data/postgresql.conf /w/new/
		[ "$STATS" = yes ] || exit 0
		/usr/lib/postgresql/17/bin/pg_ctl -D /w/new -o "-c listen_addresses= -c unix_socket_directories=/tmp" -w start >/dev/null
		/usr/lib/postgresql/17/bin/vacuumdb --all --analyze-in-stages -h /tmp -U postgres >/dev/null
		/usr/lib/postgresql/17/bin/pg_ctl -D /w/new -m fast -w stop >/dev/null'
	mv "$w/_data" "$w/old" && mv "$w/new" "$w/_data"
}

ready() { until docker exec "$1" pg_isready -q -h 127.0.0.1 2>/dev/null; do sleep 0.1; done; }

# By hand, 18 to 19 in the 18 images' layout (the volume holds 18/docker; the new cluster goes
# to 19/docker, where the 19 image looks): prints pg_upgrade's own seconds.
by_hand19() {
	local v=$vols/$1/_data
	cp -a "$v/18/docker" "$v/backup"
	install -d -o 999 -g 999 -m 700 "$v/19" "$v/19/docker"
	docker run --rm --network none -u 999:999 -v "$v:/v" --tmpfs /tmp:uid=999 -w /tmp "$toolbox19" bash -ec '
		sums=$(/usr/lib/postgresql/18/bin/pg_controldata /v/18/docker | awk -F: "/checksum version/ { print \$2 + 0 }")
		k=(--no-data-checksums); [ "$sums" = 0 ] || k=(--data-checksums)
		/usr/lib/postgresql/19/bin/initdb -D /v/19/docker -U postgres -A trust --encoding=UTF8 --lc-collate=en_US.utf8 --lc-ctype=en_US.utf8 "${k[@]}" >/dev/null
		s=$(date +%s%N)
		/usr/lib/postgresql/19/bin/pg_upgrade -b /usr/lib/postgresql/18/bin -B /usr/lib/postgresql/19/bin \
			-d /v/18/docker -D /v/19/docker -U postgres --link --jobs 2 -s /tmp >/dev/null
		e=$(date +%s%N)
		cp /v/18/docker/pg_hba.conf /v/18/docker/postgresql.conf /v/19/docker/
		/usr/lib/postgresql/19/bin/pg_ctl -D /v/19/docker -o "-c listen_addresses= -c unix_socket_directories=/tmp" -w start >/dev/null
		/usr/lib/postgresql/19/bin/vacuumdb --all --analyze-only --missing-stats-only -h /tmp -U postgres >/dev/null
		/usr/lib/postgresql/19/bin/pg_ctl -D /v/19/docker -m fast -w stop >/dev/null
		awk -v n=$((e - s)) "BEGIN { printf \"%.2f\", n / 1e9 }"'
}

# One timed 18 → 19 run of contender $1 (s, l, h) on a fresh copy of template $2; appends the
# total and pg_upgrade's own time to the results to 19.
run19_one() {
	local who=$1 template=$2 label=$3 name=$prefix-run19 t0 t1 step report=$out/to19-report.json
	fresh "$template" "$name" 18
	t0=$(now)
	case $who in
	s | l)
		local transfer=auto
		[ "$who" = l ] && transfer=link
		"$pgup" --json upgrade --container "$name" --to 19 --transfer "$transfer" --yes >"$report"
		;;
	h) step=$(by_hand19 "$name") ;;
	esac
	t1=$(now)
	if [ "$who" != h ]; then
		step=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
want = "swap" if sys.argv[2] == "s" else "link"
assert r["transfer"] == want, r["transfer"]
print([s["seconds"] for s in r["steps"] if s["step"] == "upgrading"][0])' "$report" "$who")
	fi
	local pgdata=18/docker
	[ "$who" = h ] && pgdata=19/docker
	[ "$(cat "$vols/$name/_data/$pgdata/PG_VERSION")" = 19 ] || { log "$who did not upgrade $label to 19"; exit 1; }
	printf '%s\t%s\t%s\t%s\n' "$label" "$who" "$(elapsed "$t0" "$t1")" "$step" >>"$to19"
	drop "$name"
}

# The sets to 19: contenders alternating on the same 18 template, repeated.
to19_set() {
	local label=$1 kind=$2 amount=$3 template=$prefix-template19-$RANDOM bytes order
	[ -n "$toolbox19" ] || toolbox19=$(assembled 18 19)
	log "$label: making the 18 template"
	bytes=$(make_template "$template" "$kind" "$amount" no 18)
	log "$label: $(numfmt --to=iec "$bytes") of data"
	for ((r = 0; r < reps; r++)); do
		order=(s l h)
		((r % 2 == 0)) || order=(h l s)
		for who in "${order[@]}"; do
			log "$label: run $((r + 1))/$reps of $who to 19"
			run19_one "$who" "$template" "$label"
		done
	done
	drop "$template"
}

# The tree (names, types, modes, owners, sizes, mtimes, link targets) and contents of a
# cluster, leaving out pgup's entries: one hash.
tree_hash() {
	(cd "$1" && {
		find . -mindepth 1 \( -path ./.pgup -o -path './upgrade_backup_*' \) -prune -o \
			-printf '%P %y %m %U:%G %s %T@ %l\n' | sort
		# Read past the page cache (O_DIRECT): hashing twice the cluster must not evict what
		# the rest of the run reads (at 8 GB it would, and cost A a second of downtime).
		find . \( -path ./.pgup -o -path './upgrade_backup_*' \) -prune -o -type f -print0 |
			sort -z | while IFS= read -r -d '' f; do
				printf '%s ' "$f"
				dd if="$f" iflag=direct bs=1M status=none | sha256sum
			done
	} | sha256sum | cut -d' ' -f1)
}

# Whether process $1 is stopped (SIGSTOP).
frozen() { [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = T ]; }

# One downtime run of contender $1 (A, B, C) on a fresh copy of template $2, its server
# running and taking writes; appends the total and the downtime to the downtime results.
down_one() {
	local who=$1 template=$2 label=$3 name=$prefix-down t0 t1 down rss=""
	fresh "$template" "$name"
	docker start "$name" >/dev/null
	ready "$name"
	# Until the stop ends it (its errors then are expected).
	docker exec -d "$name" pgbench -n -R 50 -c 2 -T 3600 -U postgres postgres
	sleep 2
	t0=$(now)
	case $who in
	A)
		# Frozen once the backup is whole and the old cluster stopped (pg_upgrade not begun):
		# the two must be the same, byte for byte.
		local report="$out/down-report-A-${label//[ ,]/}.json" w=$vols/$name/_data pid f0 backup hashed
		PGUP_STOP_AT=Upgrading "$pgup" --json upgrade --container "$name" --to 17 \
			--new-image pgup/postgres:17 --yes >"$report" &
		pid=$!
		until frozen "$pid"; do
			kill -0 "$pid" 2>/dev/null || { log "$label: pgup ended before its backup was whole"; exit 1; }
			sleep 0.02
		done
		f0=$(now)
		backup=$(find "$w" -maxdepth 1 -name 'upgrade_backup_*' -type d ! -name '*.partial')
		[ "$(tree_hash "$backup")" = "$(tree_hash "$w")" ] ||
			{ log "$label: the backup is not the stopped cluster"; exit 1; }
		hashed=$(elapsed "$f0" "$(now)")
		kill -CONT "$pid"
		watch_rss "$pid"
		rss=$peak_kb
		down=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["downtime_s"] - float(sys.argv[2]))' "$report" "$hashed")
		t0=$(awk -v a="$t0" -v h="$hashed" 'BEGIN { printf "%.6f", a + h }')
		;;
	C)
		local report="$out/down-report-C-${label//[ ,]/}.json"
		"$pgup" --json upgrade --container "$name" --to 17 --new-image pgup/postgres:17 --mode link --no-backup --yes >"$report"
		down=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["downtime_s"])' "$report")
		;;
	B)
		docker stop -t 120 "$name" >/dev/null
		by_hand "$name" yes no
		docker rm "$name" >/dev/null
		docker run -d --name "$name" -e POSTGRES_PASSWORD -v "$name:/var/lib/postgresql/data" pgup/postgres:17 >/dev/null
		ready "$name"
		down=$(elapsed "$t0" "$(now)")
		;;
	esac
	t1=$(now)
	[ "$(cat "$vols/$name/_data/PG_VERSION")" = 17 ] || { log "$who did not upgrade $label"; exit 1; }
	printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$who" "$(elapsed "$t0" "$t1")" "$down" "$rss" >>"$downtimes"
	drop "$name"
}

dump_restore() {
	local name=$1 new=$1-new
	docker volume create "$new" >/dev/null
	docker start "$name" >/dev/null
	docker run -d --name "$new" -e POSTGRES_PASSWORD -v "$new:/var/lib/postgresql/data" pgup/postgres:17 >/dev/null
	until docker exec "$name" pg_isready -q -h 127.0.0.1 2>/dev/null && docker exec "$new" pg_isready -q -h 127.0.0.1 2>/dev/null; do sleep 0.2; done
	docker exec "$name" pg_dumpall -U postgres | docker exec -i "$new" psql -q -U postgres -d postgres >/dev/null 2>&1
	docker exec "$new" vacuumdb --all --analyze-in-stages -U postgres >/dev/null
	docker rm -f -v "$new" >/dev/null
	docker volume rm -f "$new" >/dev/null
}

xfs_ready=no
if [ "$mode" = --full ] && command -v mkfs.xfs >/dev/null && truncate -s 40G "$out/xfs.img" 2>/dev/null &&
	mkfs.xfs -q -m reflink=1 "$out/xfs.img" && mkdir -p "$out/xfs" && mount -o loop "$out/xfs.img" "$out/xfs"; then
	xfs_ready=yes
fi

# One timed run of contender $1 on a fresh copy of template $2; appends to the results.
run_one() {
	local who=$1 template=$2 label=$3 name=$prefix-run t0 t1 rss=""
	fresh "$template" "$name"
	t0=$(now)
	case $who in
	a) rss=$(peak_rss "$pgup" upgrade --container "$name" --to 17 --yes) ;;
	b) by_hand "$name" yes ;;
	c) rss=$(peak_rss "$pgup" upgrade --container "$name" --to 17 --mode link --no-backup --yes) ;;
	c0) by_hand "$name" no ;;
	d) dump_restore "$name" ;;
	e)
		docker rm -f "$name" >/dev/null
		rm -rf "$out/xfs/data" && cp -a "$vols/$name/_data" "$out/xfs/data" && sync
		t0=$(now)
		rss=$(peak_rss "$pgup" upgrade --data-dir "$out/xfs/data" --to 17 --mode clone --yes)
		;;
	esac
	t1=$(now)
	local data=$vols/$name/_data
	[ "$who" = e ] && data=$out/xfs/data
	local version
	version=$(cat "$data/PG_VERSION")
	[ "$who" = d ] || [ "$version" = 17 ] || { log "$who did not upgrade $label"; exit 1; }
	printf '%s\t%s\t%s\t%s\n' "$label" "$who" "$(elapsed "$t0" "$t1")" "$rss" >>"$results"
	drop "$name"
}

bench_set() {
	local label=$1 kind=$2 amount=$3 template=$prefix-template-$RANDOM bytes contenders
	log "$label: making the template"
	bytes=$(make_template "$template" "$kind" "$amount")
	log "$label: $(numfmt --to=iec "$bytes") of data"
	contenders=(a b c c0 d)
	[ "$xfs_ready" = yes ] && contenders+=(e)
	read -ra contenders <<<"${PGUP_BENCH_CONTENDERS-${contenders[*]}}"
	for ((r = 0; r < reps; r++)); do
		local order=("${contenders[@]}")
		# Alternate the order from one repetition to the next.
		if ((r % 2 == 1)); then mapfile -t order < <(printf '%s\n' "${contenders[@]}" | tac); fi
		for who in "${order[@]}"; do
			log "$label: run $((r + 1))/$reps of $who"
			run_one "$who" "$template" "$label"
		done
	done
	drop "$template"
}

# The downtime sets: contenders in turn on the same template, repeated.
down_set() {
	local label=$1 amount=$2 sums=$3 template=$prefix-down-template-$RANDOM
	[ ${#downs[@]} -gt 0 ] || return 0
	log "$label: making the template"
	make_template "$template" gb "$amount" "$sums" >/dev/null
	for ((r = 0; r < reps; r++)); do
		for who in "${downs[@]}"; do
			log "$label: downtime run $((r + 1))/$reps of $who"
			down_one "$who" "$template" "$label"
		done
	done
	drop "$template"
}

for g in "${sizes[@]}"; do bench_set "${g} GB" gb "$g"; done
for n in "${tables[@]}"; do bench_set "$n tables" tables "$n"; done
for sums in "${checksums[@]}"; do
	for g in "${down_sizes[@]}"; do
		down_set "${g} GB, checksums $sums" "$g" "$sums"
	done
done
for g in "${sizes19[@]}"; do to19_set "${g} GB" gb "$g"; done
for n in "${tables19[@]}"; do to19_set "$n tables" tables "$n"; done

python3 - "$results" "$mode" "$downtimes" "$to19" <<'PY' | tee "$out/results.md"
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
times, rss = collections.defaultdict(list), collections.defaultdict(list)
order = []
for label, who, secs, peak in rows:
    if label not in order: order.append(label)
    times[(label, who)].append(float(secs))
    if peak: rss[label].append(int(peak))
med = lambda k: statistics.median(times[k]) if times.get(k) else None
fmt = lambda v: "-" if v is None else f"{v:.1f}"
ratio = lambda x, y: "-" if x is None or y is None or y == 0 else f"{x / y:.2f}"
m = lambda t, k: statistics.median(t[k]) if t.get(k) else None
# A median, with a second one in brackets.
cell = lambda main, extra, k: "-" if m(main, k) is None else f"{m(main, k):.1f} ({m(extra, k):.1f})"
print(f"Mode {sys.argv[2]}; medians in seconds, ratios from the same run.\n")
print("| data | a pgup | b by hand | a/b | a−b | c pgup link | c0 by hand | c/c0 | d dump/restore | d/a | e clone | pgup peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label in order:
    a, b, c, c0, d, e = (med((label, w)) for w in ("a", "b", "c", "c0", "d", "e"))
    diff = "-" if a is None or b is None else f"{a - b:+.1f}"
    peak = f"{max(rss[label]) / 1024:.1f} MB" if rss[label] else "-"
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} | {diff} | {fmt(c)} | {fmt(c0)} | {ratio(c, c0)} | {fmt(d)} | {ratio(d, a)} | {fmt(e)} | {peak} |")
downs = [l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip()]
if downs:
    total, down, order = collections.defaultdict(list), collections.defaultdict(list), []
    peaks = collections.defaultdict(list)
    for label, who, secs, d, *peak in downs:
        if label not in order: order.append(label)
        total[(label, who)].append(float(secs))
        down[(label, who)].append(float(d))
        if peak and peak[0]: peaks[label].append(int(peak[0]))
    print("\nDowntime under write load (pgbench -R 50 -c 2 until the stop), from the stop to the new major's first answer; medians in seconds, total in brackets.\n")
    print("| data | A pgup safe | C pgup link, no backup | B by hand (cp -a) | A/C | A/B | A peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for label in order:
        dA, dB, dC = (m(down, (label, w)) for w in ("A", "B", "C"))
        peak = f"{max(peaks[label]) / 1024:.1f} MB" if peaks[label] else "-"
        A, B, C = (cell(down, total, (label, w)) for w in ("A", "B", "C"))
        print(f"| {label} | {A} | {C} | {B} | {ratio(dA, dC)} | {ratio(dA, dB)} | {peak} |")
    # Downtime independent of size: the largest size's against the smallest's, per variant.
    for sums in ("no", "yes"):
        mine = [l for l in order if l.endswith(f"checksums {sums}")]
        if len(mine) > 1:
            lo, hi = mine[0], mine[-1]
            print(f"\nChecksums {sums}: A at {hi.split(',')[0]} / A at {lo.split(',')[0]}: {ratio(m(down, (hi, 'A')), m(down, (lo, 'A')))}")
to19 = [l.rstrip("\n").split("\t") for l in open(sys.argv[4]) if l.strip()]
if to19:
    total, step, order = collections.defaultdict(list), collections.defaultdict(list), []
    for label, who, secs, s in to19:
        if label not in order: order.append(label)
        total[(label, who)].append(float(secs))
        step[(label, who)].append(float(s))
    print("\nTo 19 (18 → 19, a stopped cluster): medians in seconds of the whole job (the downtime: no server runs); in brackets pgup's upgrading step (pg_upgrade, with the old cluster's record beside it) and by hand pg_upgrade alone.\n")
    print("| data | s pgup safe (swap) | l pgup safe, link | h by hand (cp -a, link) | s/h | s/l | pg_upgrade swap/link |")
    print("|---|---|---|---|---|---|---|")
    for label in order:
        s, l, h = (m(total, (label, w)) for w in ("s", "l", "h"))
        S, L, H = (cell(total, step, (label, w)) for w in ("s", "l", "h"))
        print(f"| {label} | {S} | {L} | {H} | {ratio(s, h)} | {ratio(s, l)} | {ratio(m(step, (label, 's')), m(step, (label, 'l')))} |")
PY
