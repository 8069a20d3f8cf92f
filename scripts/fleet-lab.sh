#!/usr/bin/env bash
# A lab of hosts on this machine for the fleet rollout: lab1 … labN, each with its own network
# namespace and address, its own Docker engine (own data root, exec root and socket), its own
# sshd, its host name, and a mount namespace in which /var/run/docker.sock is that host's
# engine and /opt/pgup its own directory. Ansible reaches them as it reaches real hosts: by
# SSH, at an address each. No image is pulled or shared: each host gets PostgreSQL 13 as a
# signed bundle it verifies and loads, then runs a container `db` with sample data.
#
# Usage: scripts/fleet-lab.sh up N        start N hosts (again: the lab is made anew);
#                                         the last line printed is the inventory's path
#        scripts/fleet-lab.sh rollout|rollback|cleanup [ansible-playbook options]
#                                         that playbook of the collection on the lab, with
#                                         the project's own Ansible (a virtual environment)
#        scripts/fleet-lab.sh exec HOST COMMAND...
#                                         run a command on one host, over SSH
#        scripts/fleet-lab.sh down        remove everything `up` made
# Environment: PGUP_LAB_DIR (default /var/lib/pgup-lab; sshd wants its
# parents writable by root only), PGUP_LAB_NET (the first three octets
# of the lab's /24, default 10.77.0), PGUP_LAB_TAG (what the names of its
# namespaces, links and images start with, default pgup: two labs with
# other directories, networks and tags run side by side), PGUP_LAB_PGUP (a
# pgup to use, on a machine scripts/setup.sh has made ready; default: the
# release build, after setup).
set -euo pipefail
cd "$(dirname "$0")/.."

lab=${PGUP_LAB_DIR:-/var/lib/pgup-lab}
net=${PGUP_LAB_NET:-10.77.0}
tag=${PGUP_LAB_TAG:-pgup}
bridge=$tag-lab0
toolbox=pgup/toolbox:$tag-lab-13-17
key=$lab/controller_key
# The pgup of the controller and of every host.
pgup=$lab/bin/pgup

log() { echo "fleet-lab: $*" >&2; }
die() {
	log "$*"
	exit 1
}
usage() { die "usage: scripts/fleet-lab.sh up N | rollout|rollback|cleanup [ansible-playbook options] | exec HOST COMMAND... | down"; }

host_dir() { echo "$lab/hosts/$1"; }
address() { echo "$net.$((10 + ${1#lab}))"; }
ssh_opts=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes)
on() {
	local host=$1
	shift
	ssh "${ssh_opts[@]}" -i "$key" "root@$(address "$host")" "$@"
}

# The hosts `up` made, from their directories (down works after a half-done up too).
hosts() {
	[ -d "$lab/hosts" ] || return 0
	find "$lab/hosts" -mindepth 1 -maxdepth 1 -name 'lab*' -printf '%f\n' | sort -V
}

down() {
	for host in $(hosts); do
		local dir
		dir=$(host_dir "$host")
		# The engine stops its containers as it shuts down; sshd and its sessions go first.
		for pid_file in "$dir/run/sshd.pid" "$dir/run/docker.pid"; do
			[ -s "$pid_file" ] || continue
			local pid
			pid=$(cat "$pid_file")
			kill "$pid" 2>/dev/null || continue
			for _ in $(seq 100); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.2
			done
		done
		# What still runs there: SSH sessions (Ansible keeps its connections open a while).
		ip netns pids "$tag-$host" 2>/dev/null | xargs -r kill 2>/dev/null || true
		ip netns del "$tag-$host" 2>/dev/null || true
		ip link del "$tag-$host-h" 2>/dev/null || true
		# What the engine left mounted under its data root (layers of killed containers).
		grep -o " $dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	done
	ip link del "$bridge" 2>/dev/null || true
	# The toolbox up assembled on this machine's engine for the bundle.
	docker rmi "$toolbox" >/dev/null 2>&1 || true
	rm -rf "$lab"
	# The hosts' mount point, when nothing else put anything there.
	rmdir /opt/pgup 2>/dev/null || true
}

# Starts HOST's engine in its network namespace and waits for its socket.
start_engine() {
	local host=$1 dir
	dir=$(host_dir "$host")
	mkdir -p "$dir"/{docker,exec,run,opt/bin,ssh}
	# The storage driver this machine's engine uses is the one that works here.
	printf '{"storage-driver": "%s"}\n' "$(docker info --format '{{.Driver}}')" >"$dir/daemon.json"
	nohup nsenter --net="/var/run/netns/$tag-$host" dockerd \
		--config-file "$dir/daemon.json" --data-root "$dir/docker" --exec-root "$dir/exec" \
		--pidfile "$dir/run/docker.pid" -H "unix://$dir/run/docker.sock" \
		--bridge none --iptables=false --ip6tables=false >"$dir/dockerd.log" 2>&1 &
	for _ in $(seq 150); do
		DOCKER_HOST=unix://$dir/run/docker.sock docker info >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "$host: its Docker engine did not start: $(tail -n 3 "$dir/dockerd.log")"
}

# Starts HOST's sshd in its network namespace and a mount namespace of its own.
start_sshd() {
	local host=$1 dir addr
	dir=$(host_dir "$host")
	addr=$(address "$host")
	ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh/host_key"
	cp "$key.pub" "$dir/ssh/authorized_keys"
	chmod 600 "$dir/ssh/authorized_keys"
	cat >"$dir/ssh/sshd_config" <<-EOF
		ListenAddress $addr
		HostKey $dir/ssh/host_key
		PidFile $dir/run/sshd.pid
		AuthorizedKeysFile $dir/ssh/authorized_keys
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		SetEnv DOCKER_HOST=unix://$dir/run/docker.sock PATH=/opt/pgup/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		Subsystem sftp internal-sftp
	EOF
	mkdir -p /run/sshd /opt/pgup
	nsenter --net="/var/run/netns/$tag-$host" unshare --mount --uts --propagation private sh -c '
		hostname "$2" &&
		mount --bind "$1/run/docker.sock" /var/run/docker.sock &&
		mount --bind "$1/opt" /opt/pgup &&
		exec /usr/sbin/sshd -f "$1/ssh/sshd_config" -E "$1/sshd.log"' sh "$dir" "$host"
	for _ in $(seq 50); do
		on "$host" true 2>/dev/null && return 0
		sleep 0.2
	done
	die "$host: sshd does not answer at $addr: $(tail -n 3 "$dir/sshd.log")"
}

# Gives HOST pgup, loads the signed 13 bundle and starts `db` with sample data.
provision() {
	local host=$1 dir
	dir=$(host_dir "$host")
	cp "$pgup" "$dir/opt/bin/pgup"
	on "$host" pgup image load "$lab/bundles/postgres-13.tar" --public-key "$lab/bundles/lab.pub" >/dev/null
	# The password reaches docker through the environment, never a command line.
	(umask 077 && head -c 18 /dev/urandom | base64 >"$dir/opt/db-password")
	on "$host" 'POSTGRES_PASSWORD=$(cat /opt/pgup/db-password) docker run -d --name db --restart unless-stopped \
		-e POSTGRES_PASSWORD -e POSTGRES_DB=shop -v db-data:/var/lib/postgresql/data pgup/postgres:13 >/dev/null'
	on "$host" 'until docker exec db pg_isready -q -U postgres -h 127.0.0.1 2>/dev/null; do sleep 0.3; done'
	on "$host" docker exec -i db psql -q -v ON_ERROR_STOP=1 -U postgres -d shop <<-SQL
		CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, host text);
		CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(10,2));
		INSERT INTO customers (name, host) SELECT 'customer ' || g, '$host' FROM generate_series(1, 2000) g;
		INSERT INTO orders (customer, total) SELECT 1 + g % 2000, (g % 500) + 0.99 FROM generate_series(1, 20000) g;
	SQL
}

up() {
	local n=$1
	[[ $n =~ ^[1-9][0-9]?$ ]] && [ "$n" -le 50 ] || die "up N: N is a number of hosts from 1 to 50"
	[ "$(id -u)" = 0 ] || die "the lab makes network namespaces and engines: run it as root"
	command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || {
		log "installing openssh-server"
		apt-get update -q >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server >/dev/null
	}
	down
	local built=target/release/pgup
	if [ -n "${PGUP_LAB_PGUP:-}" ]; then
		built=$PGUP_LAB_PGUP
	else
		bash scripts/setup.sh
		cargo build --release --locked -q
	fi
	mkdir -p "$lab/hosts" "$lab/bundles" "$lab/bin"
	cp "$built" "$pgup"
	ssh-keygen -q -t ed25519 -N '' -f "$key"

	# Images reach the hosts as the field's do: a bundle, signed, verified on each host.
	# The upgrade's carries the collection, which the controller installs from it once it
	# verifies (Ansible checks no collection's signature).
	log "bundles: PostgreSQL 13 for the hosts, 17, the 13/17 toolbox and the collection for a rollout"
	minisign -G -W -p "$lab/bundles/lab.pub" -s "$lab/bundles/lab.key" >/dev/null
	"$pgup" image save pgup/postgres:13 -o "$lab/bundles/postgres-13.tar" >/dev/null
	# The toolbox of the very pgup the hosts run, which finds it by its labels: no host
	# assembles one.
	"$pgup" image assemble --old pgup/postgres:13 --new pgup/postgres:17 --tag "$toolbox" >/dev/null
	ansible_venv
	"$venv/bin/ansible-galaxy" collection build ansible --output-path "$lab/bundles" >/dev/null
	"$pgup" image save pgup/postgres:17 "$toolbox" --include "$lab"/bundles/pgup-fleet-*.tar.gz \
		-o "$lab/bundles/upgrade-17.tar" >/dev/null
	rm "$lab"/bundles/pgup-fleet-*.tar.gz
	for b in postgres-13 upgrade-17; do
		minisign -S -s "$lab/bundles/lab.key" -m "$lab/bundles/$b.tar" >/dev/null
	done

	ip link add "$bridge" type bridge
	ip addr add "$net.1/24" dev "$bridge"
	ip link set "$bridge" up
	for i in $(seq "$n"); do
		local host=lab$i
		log "$host: $(address "$host")"
		ip netns add "$tag-$host"
		ip link add "$tag-$host-h" type veth peer name eth0 netns "$tag-$host"
		ip link set "$tag-$host-h" master "$bridge" up
		ip -n "$tag-$host" addr add "$(address "$host")/24" dev eth0
		ip -n "$tag-$host" link set eth0 up
		ip -n "$tag-$host" link set lo up
		start_engine "$host"
		start_sshd "$host"
	done
	# The hosts load their bundles and seed their databases side by side.
	local pids=()
	for i in $(seq "$n"); do
		provision "lab$i" &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || die "a host could not be provisioned (see above)"; done

	local inventory=$lab/inventory.ini
	{
		echo "[canary]"
		echo "lab1 ansible_host=$(address lab1)"
		echo
		echo "[pgup_hosts]"
		for i in $(seq "$n"); do echo "lab$i ansible_host=$(address "lab$i")"; done
		echo
		echo "[pgup_hosts:vars]"
		echo "ansible_user=root"
		echo "ansible_ssh_private_key_file=$key"
		echo "ansible_ssh_common_args=${ssh_opts[*]}"
		echo "ansible_python_interpreter=/usr/bin/python3"
		echo "pgup_container=db"
		echo "pgup_to=17"
		echo "pgup_new_image=pgup/postgres:17"
		echo "pgup_bundle=$lab/bundles/upgrade-17.tar"
		echo "pgup_public_key=$lab/bundles/lab.pub"
		# Each host's own directory (the lab's other paths are every host's).
		echo "pgup_remote_dir=/opt/pgup/bundles"
	} >"$inventory"
	log "$n hosts up; each serves PostgreSQL 13 in container db"
	echo "$inventory"
}

# ansible-core from PyPI in a virtual environment of the project's (target/ is not committed).
venv=target/ansible-venv
ansible_core='ansible-core>=2.17,<2.20'

ansible_venv() {
	[ -x "$venv/bin/ansible-playbook" ] || {
		log "installing $ansible_core into $venv"
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q "$ansible_core"
	}
}

# The collection as a controller installs it: from the upgrade bundle, once it verifies, then
# offline from its tarball.
collection() {
	ansible_venv
	rm -rf "$lab/collection"
	"$pgup" image verify "$lab/bundles/upgrade-17.tar" --public-key "$lab/bundles/lab.pub" \
		--extract "$lab/collection" >/dev/null
	"$venv/bin/ansible-galaxy" collection install --offline -p "$lab/collection/installed" \
		"$lab"/collection/pgup-fleet-*.tar.gz >/dev/null 2>&1
}

# playbook NAME [options]: the collection's playbook NAME on the lab, its summary in
# $lab/NAME-summary.json.
playbook() {
	local name=$1
	shift
	[ -s "$lab/inventory.ini" ] || die "no lab here: scripts/fleet-lab.sh up N makes one"
	collection
	ANSIBLE_COLLECTIONS_PATH=$lab/collection/installed ANSIBLE_CALLBACKS_ENABLED=pgup.fleet.summary \
		PGUP_SUMMARY=$lab/$name-summary.json \
		"$venv/bin/ansible-playbook" -i "$lab/inventory.ini" "pgup.fleet.$name" "$@"
}

case "${1:-}" in
up)
	[ $# -eq 2 ] || usage
	up "$2"
	;;
rollout | rollback | cleanup)
	playbook "$@"
	;;
exec)
	[ $# -ge 3 ] || usage
	host=$2
	shift 2
	[ -d "$(host_dir "$host")" ] || die "no lab host $host (scripts/fleet-lab.sh up N makes lab1 … labN)"
	on "$host" "$@"
	;;
down)
	[ $# -eq 1 ] || usage
	down
	log "lab removed"
	;;
*) usage ;;
esac
