/*-------------------------------------------------------------------------
 * guc.c
 *	  Every pg_egress configuration parameter, defined in one place.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "pg_egress.h"
#include "net/hosts.h"
#include "net/kinesis.h"
#include "net/s3.h"

char	   *egress_database = NULL;
int			egress_max_workers = 4;
int			egress_naptime_ms = 10000;
int			egress_batch_max_rows = 100000;
int			egress_batch_max_bytes_kb = 64 * 1024;
int			egress_flush_interval_ms = 1000;
int			egress_max_slot_lag_mb = 1024;
int			egress_max_active_streams = 256;
int			egress_max_slot_wal_mb = 16 * 1024;
int			egress_heartbeat_interval_ms = 60 * 1000;

void
egress_define_gucs(void)
{
	DefineCustomStringVariable("pg_egress.database",
							   "Database whose egress catalog the pg_egress workers serve.",
							   NULL,
							   &egress_database,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.max_workers",
							"Maximum number of pg_egress sync workers running at once.",
							"Each is a dynamic background worker counted in max_worker_processes.",
							&egress_max_workers,
							4, 1, 64,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.naptime",
							"Time the pg_egress database worker sleeps when nothing wakes it.",
							NULL,
							&egress_naptime_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.batch_max_rows",
							"Records after which a batch is closed.",
							NULL,
							&egress_batch_max_rows,
							100000, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.batch_max_bytes",
							"Size after which a batch is closed.",
							NULL,
							&egress_batch_max_bytes_kb,
							64 * 1024, 1, 1024 * 1024,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.flush_interval",
							"Age after which a batch of changes is closed.",
							NULL,
							&egress_flush_interval_ms,
							1000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.max_slot_lag",
							"WAL a pg_egress replication slot may hold before its streams are warned about or paused.",
							"0 turns the guard off.",
							&egress_max_slot_lag_mb,
							1024, 0, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.max_slot_wal",
							"WAL a pg_egress replication slot may hold before it is dropped and its streams synced again.",
							"The hard limit that protects pg_wal from a destination that keeps failing; 0 turns it off.",
							&egress_max_slot_wal_mb,
							16 * 1024, 0, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.heartbeat_interval",
							"Time after which a CDC worker whose slot did not move writes a heartbeat into the WAL.",
							"A heartbeat lets the slot of a destination whose tables are idle free the WAL that other databases or tables wrote; 0 turns heartbeats off.",
							&egress_heartbeat_interval_ms,
							60 * 1000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.max_active_streams",
							"Streams whose live figures shared memory can hold at once.",
							NULL,
							&egress_max_active_streams,
							256, 8, 65536,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pg_egress.allowed_destination_hosts",
							   "Hosts that destinations of roles that are not superusers may send to.",
							   "Comma-separated host names, domains (.example.com), IP addresses, CIDR ranges, "
							   "and * for any address that is not loopback, link-local, private or otherwise special. "
							   "Empty: none.",
							   &egress_allowed_destination_hosts,
							   "*",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   egress_check_allowed_hosts, NULL, NULL);

	egress_s3_define_gucs();

	DefineCustomStringVariable("pg_egress.kinesis_endpoint",
							   "Base URL of a Kinesis-compatible server.",
							   "Empty means AWS: https://kinesis.<region>.amazonaws.com. "
							   "Credentials are those of S3 (pg_egress.s3_access_key_id, ...).",
							   &egress_kinesis_endpoint,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	MarkGUCPrefixReserved("pg_egress");
}
