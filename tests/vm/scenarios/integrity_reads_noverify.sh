# integrity_reads_noverify: integrity_reads with read_verify off.
. /bench/scenarios/integrity_reads.sh
READ_VERIFY=0
