# Developer targets of ccm. Only `dev`, `start-lablet-infra` and a docker-based
# `validate-prereqs` need Docker; `demo` and `test` run on a bare machine.
CARGO ?= cargo
COMPOSE ?= docker compose
CCM = $(CARGO) run --quiet -p ccm-bin --bin ccm --

.PHONY: dev validate-prereqs start-lablet-infra stop-lablet-infra test bench demo build

## dev: start etcd, MinIO and MongoDB in Docker and wait until ccm can reach them
dev: start-lablet-infra

## validate-prereqs: check etcd, S3/MinIO and MongoDB from the settings (.env + environment)
validate-prereqs:
	$(CCM) validate-prereqs

## start-lablet-infra: docker compose up the prerequisites, then validate them
start-lablet-infra:
	$(COMPOSE) -f docker-compose.yml up -d etcd minio minio-init mongodb
	@echo "Waiting for services to be healthy..."
	@for i in $$(seq 1 30); do \
	  MONGODB_URI=$${MONGODB_URI:-mongodb://localhost:27017/?directConnection=true} \
	    $(CCM) validate-prereqs --timeout 2 >/dev/null 2>&1 && break; sleep 2; done
	@MONGODB_URI=$${MONGODB_URI:-mongodb://localhost:27017/?directConnection=true} $(MAKE) --no-print-directory validate-prereqs

## stop-lablet-infra: stop the containers (data volumes are kept)
stop-lablet-infra:
	$(COMPOSE) -f docker-compose.yml down

## test: the one test command (installs and starts the test servers itself)
test:
	bash scripts/test.sh

## bench: criterion benches (compare against the naive baselines in the same run)
bench:
	$(CARGO) bench -p ccm-benches

## demo: a whole exam day on a virtual clock, in-process, no servers needed
demo:
	$(CCM) demo

build:
	$(CARGO) build --workspace --all-features
