#!/bin/sh
# The apache/kafka image's start, plus what its KAFKA_* variables cannot carry: the SASL login
# lines (the admin password, from a Compose secret, never in an environment) and the SCRAM
# users of streams/kafka_acls.py, written when the storage is first formatted.
set -eu
config=/opt/kafka/config/server.properties
data=/var/lib/kafka/data
first_start=true
[ -f "$data/meta.properties" ] && first_start=false

# server.properties from the KAFKA_* variables (this also formats the storage, without the users)
/opt/kafka/bin/kafka-run-class.sh kafka.docker.KafkaDockerWrapper setup --default-configs-dir /etc/kafka/docker \
  --mounted-configs-dir /mnt/shared/config --final-configs-dir /opt/kafka/config >/tmp/setup.log 2>&1 \
  || grep -qi "already formatted" /tmp/setup.log || { cat /tmp/setup.log; exit 1; }

admin=$(cat /run/secrets/kafka_admin_password)
cat >>"$config" <<EOF
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
EOF

if $first_start; then  # again, with every principal's SCRAM user in the first metadata records
  rm -rf "${data:?}"/*
  set --
  for user in admin worker projector itop auditor; do
    set -- "$@" --add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "/run/secrets/kafka_${user}_password")]"
  done
  /opt/kafka/bin/kafka-storage.sh format --cluster-id "$CLUSTER_ID" --config "$config" "$@"
fi

# the health check's client (and an operator's, with kafka-*.sh --command-config)
umask 077
cat >/tmp/admin.properties <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/kafka_ca
EOF
exec /opt/kafka/bin/kafka-server-start.sh "$config"
