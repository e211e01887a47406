/*-------------------------------------------------------------------------
 * egress_slots.h
 *	  What code outside the decoder (the catalog's SQL functions, stream
 *	  takeover, publications) needs to know of replication slots: the
 *	  output plugins pg_egress decodes with and a few questions about
 *	  slots.  Implemented in decode/slot.c; declared here so that catalog
 *	  code depends on this neutral header, not on decode/ (the layering
 *	  runs one way: catalog below sink, decode and worker).
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SLOTS_H
#define EGRESS_SLOTS_H

/*
 * The output plugins pg_egress decodes with: pgoutput (core, the default)
 * and wal2json (slots taken over from a Singer tap, or destination option
 * "decoder": "wal2json").  A slot's plugin decides how it is decoded.
 */
#define EGRESS_PLUGIN_PGOUTPUT "pgoutput"
#define EGRESS_PLUGIN_WAL2JSON "wal2json"

/* Is plugin one pg_egress decodes with? */
extern bool egress_plugin_is_ours(const char *plugin);

/*
 * ERROR (with the setting to change) unless this server can decode with
 * plugin: wal_level, the plugin installed, output_plugin_libraries.
 */
extern void egress_check_decoding_possible(const char *plugin);

/* Does the slot exist?  If so, its plugin and database. */
extern bool egress_slot_lookup(const char *name, char **plugin, Oid *dboid);

/* Free replication slots (not counting ours). */
extern int	egress_free_slots(void);

#endif							/* EGRESS_SLOTS_H */
