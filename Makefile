# pg_egress — PGXS build
EXTENSION = pg_egress aws_s3
EXTVERSION = 0.2
MODULE_big = pg_egress

OBJS = \
	src/pg_egress.o \
	src/guc.o \
	src/shmem.o \
	src/catalog/catalog.o \
	src/catalog/sqlfuncs.o \
	src/catalog/check.o \
	src/catalog/takeover.o \
	src/catalog/discover.o \
	src/catalog/patterns.o \
	src/catalog/alter.o \
	src/catalog/publication.o \
	src/catalog/version.o \
	src/decode/slot.o \
	src/decode/change.o \
	src/decode/pgoutput.o \
	src/decode/wal2json.o \
	src/encode/singer_types.o \
	src/encode/singer.o \
	src/encode/preview.o \
	src/encode/pg_kinesis.o \
	src/sink/sink.o \
	src/sink/file.o \
	src/sink/s3.o \
	src/sink/http.o \
	src/sink/kinesis.o \
	src/sink/sink_options.o \
	src/sink/postgres.o \
	src/sink/pg_apply.o \
	src/sink/pg_apply_early.o \
	src/sink/pg_typemap.o \
	src/worker/launcher.o \
	src/worker/dbworker.o \
	src/worker/cdc.o \
	src/worker/cdc_batch.o \
	src/worker/cdc_config.o \
	src/worker/cdc_decode.o \
	src/worker/cdc_heartbeat.o \
	src/worker/cdc_relmap.o \
	src/worker/cdc_render.o \
	src/worker/cdc_backfill.o \
	src/worker/cdc_walguard.o \
	src/worker/snapshot.o \
	src/worker/sync.o \
	src/worker/incremental.o \
	src/export/export.o \
	src/export/fast_sync.o \
	src/export/parallel.o \
	src/net/s3.o \
	src/net/kinesis.o \
	src/net/hosts.o \
	src/net/backoff.o \
	src/net/curl_wait.o \
	src/net/pgconn.o

DATA = $(wildcard sql/pg_egress--*.sql) sql/aws_s3--1.0.sql
PGFILEDESC = "pg_egress - data egress from inside PostgreSQL"

SHLIB_LINK = -lcurl -lz
# libpq for postgres:// destinations, linked as contrib/postgres_fdw links it
SHLIB_LINK_INTERNAL = $(libpq)
PG_CPPFLAGS = -I$(srcdir)/src -I$(libpq_srcdir)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers -Wno-cast-function-type

# pg_regress: a throwaway instance with the library preloaded.  The workers
# serve another database, so the SQL-surface tests stay deterministic.
REGRESS = catalog types discover patterns export publication sink_options check alter alter_attacks check_attacks postgres_destination postgres_attacks
REGRESS_OPTS = --inputdir=test --temp-instance=$(CURDIR)/tmp_regress \
	--temp-config=$(CURDIR)/tmp_regress.conf --encoding=UTF8 --no-locale

# Isolation specs (test/specs/*.spec, expected output in test/expected): a
# throwaway instance of their own whose workers serve the isolation
# database, so that concurrent egress_* calls race the database worker and
# the workers it starts.  make installcheck runs them after pg_regress.
ISOLATION = stream_race destination_race pattern_race
ISOLATION_OPTS = --inputdir=test --temp-instance=$(CURDIR)/tmp_isolation \
	--temp-config=$(CURDIR)/tmp_isolation.conf --encoding=UTF8 --no-locale

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

EXTRA_CLEAN = tmp_regress tmp_regress.conf tmp_isolation tmp_isolation.conf tmp_check \
	results regression.diffs regression.out output_iso

# Servers that restrict output plugins (output_plugin_libraries) must allow
# wal2json for LOG_BASED streams; other builds do not know the setting.
installcheck: tmp_regress.conf tmp_isolation.conf
tmp_regress.conf: test/regress.conf
	cp $< $@
	if "$(bindir)/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then \
		echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" >> $@; fi
# the same settings, but the workers serve the isolation database
tmp_isolation.conf: tmp_regress.conf test/isolation.conf
	grep -v '^pg_egress\.database' tmp_regress.conf > $@
	cat test/isolation.conf >> $@

# PGXS tracks no header dependencies: rebuild everything when a header changes
$(OBJS): $(wildcard $(srcdir)/src/*.h $(srcdir)/src/*/*.h)

.PHONY: demo test tap bench prove_installcheck
demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

# The TAP suites (test/t/*.pl) against the installed build, as PGXS's
# prove_installcheck does for contrib modules: PROVE_TESTS picks files,
# PROVE_FLAGS adds prove switches (e.g. --verbose).  Used by scripts/test.sh.
prove_installcheck:
	PATH="$(bindir):$$PATH" PG_CONFIG="$(PG_CONFIG)" PROVE_FLAGS="$(PROVE_FLAGS)" \
		bash scripts/run-tap.sh $(PROVE_TESTS)

tap: prove_installcheck
