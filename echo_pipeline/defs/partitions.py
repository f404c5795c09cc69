import dagster as dg

# One partition per project; keys are slugs (`ruzgar-nft-collection`), display names live in metadata.
PROJECTS = "projects"
projects_partitions = dg.DynamicPartitionsDefinition(name=PROJECTS)
