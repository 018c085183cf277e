"""Population pre-screening: every patient of a FHIR Bulk Data export, on one machine or a Spark cluster.

export.py    the export's files and types (manifest.json or file names), chunks of bytes to read
keying.py    each line -> its patient (or, a Medication, its id) and the Medications it references
screen.py    the one per-patient function: a patient's lines -> its worklist rows (pipeline.evaluate)
local.py     engine `local`: a process per core, spill files by patient hash, Medications in SQLite
spark.py     engine `spark`: the same functions in mapInPandas, the join and the grouping by Spark
results.py   what a screening found, summed the same way for both engines
outputs.py   worklist.csv and summary.json; report.py: report.html
job.py       one screening: export -> engine -> outputs (what `cds-trials prescreen` runs)
"""
