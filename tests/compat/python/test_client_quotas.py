"""AlterClientQuotas / DescribeClientQuotas and AlterUserScramCredentials /
DescribeUserScramCredentials, bad input above all: each case is sent as its own request
(kafka-python's protocol classes, so that any field can be wrong) and must get Kafka 4.4's
error code and message. The expected answers were recorded from Apache Kafka 4.4
(`scripts/kafka-local`); with KAFKA_BOOTSTRAP set the test checks Kafka itself.

Names are unique per run and every quota set here is removed again, so the shared broker's
other tests are not throttled.
"""
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.protocol.admin.client_quotas import (AlterClientQuotasRequest,
                                                DescribeClientQuotasRequest)
from kafka.protocol.admin.users import (AlterUserScramCredentialsRequest,
                                        DescribeUserScramCredentialsRequest)

INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
UNSUPPORTED_SASL_MECHANISM = 33
RESOURCE_NOT_FOUND = 91
DUPLICATE_RESOURCE = 92
UNACCEPTABLE_CREDENTIAL = 93

RUN = uuid.uuid4().hex[:8]
USER = f"pyq-user-{RUN}"
CLIENT = f"pyq-client-{RUN}"


@pytest.fixture
def send(bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)

    def go(request):
        async def call():
            return await admin._manager.send(request)
        return admin._manager.run(call)

    yield go
    admin.close()


def alter(send, entity, ops, validate_only=False):
    r = send(AlterClientQuotasRequest(entries=[(entity, ops)], validate_only=validate_only))
    assert len(r.entries) == 1
    return r.entries[0].error_code, r.entries[0].error_message


REFUSALS = [
    ([], [("producer_byte_rate", 1.0, False)], "Invalid empty client quota entity"),
    ([("group", "g")], [("producer_byte_rate", 1.0, False)],
     "Unhandled client quota entity type: group"),
    ([("user", "")], [("producer_byte_rate", 1.0, False)], "Empty user not supported"),
    ([("user", USER), ("ip", "1.2.3.4")], [("connection_creation_rate", 1.0, False)],
     "Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId"),
    ([("ip", "nowhere.invalid")], [("connection_creation_rate", 1.0, False)],
     "nowhere.invalid is not a valid IP or resolvable host."),
    ([("user", USER)], [("bogus", 1.0, False)], "Invalid configuration key bogus"),
    ([("user", USER)], [("connection_creation_rate", 1.0, False)],
     "Invalid configuration key connection_creation_rate"),
    ([("ip", None)], [("producer_byte_rate", 1.0, False)],
     "Invalid configuration key producer_byte_rate"),
    ([("user", USER)], [("producer_byte_rate", -1.0, False)],
     "Quota producer_byte_rate must be greater than 0"),
    ([("user", USER)], [("producer_byte_rate", 0.0, False)],
     "Quota producer_byte_rate must be greater than 0"),
    ([("user", USER)], [("consumer_byte_rate", 1.5, False)],
     "consumer_byte_rate cannot be a fractional value."),
    ([("ip", None)], [("connection_creation_rate", 3e9, False)],
     "Proposed value for connection_creation_rate is too large for an INT."),
    ([("user", USER)], [("producer_byte_rate", 1.0, False), ("producer_byte_rate", 2.0, True)],
     f"Ignoring duplicate entity ClientQuotaEntity(entries={{user={USER}}})"),
]


@pytest.mark.parametrize("entity,ops,message", REFUSALS)
def test_alter_client_quotas_refuses_as_kafka(send, entity, ops, message):
    assert alter(send, entity, ops) == (INVALID_REQUEST, message)


def describe(send, components, strict=False):
    r = send(DescribeClientQuotasRequest(components=components, strict=strict))
    entries = None if r.entries is None else sorted(
        (tuple((e.entity_type, e.entity_name) for e in x.entity),
         tuple((v.key, v.value) for v in x.values)) for x in r.entries)
    return r.error_code, r.error_message or None, entries


def test_alter_describe_remove_round_trip(send):
    both = [("user", USER), ("client-id", CLIENT)]
    try:
        assert alter(send, [("client-id", CLIENT)], [("producer_byte_rate", 10.0, False)],
                     validate_only=True) == (0, None)
        assert describe(send, [("client-id", 0, CLIENT)]) == (0, None, [])
        assert alter(send, both, [("request_percentage", 12.5, False),
                                  ("consumer_byte_rate", 2048.0, False)]) == (0, None)
        assert alter(send, [("user", USER)], [("producer_byte_rate", 5.0, False)]) == (0, None)
        # Removing a key that is not set is fine.
        assert alter(send, [("user", USER)], [("consumer_byte_rate", 0.0, True)]) == (0, None)
        got = describe(send, [("user", 0, USER)])
        assert got[0] == 0 and len(got[2]) == 2, got
        strict = describe(send, [("user", 0, USER)], strict=True)
        assert strict == (0, None, [((("user", USER),), (("producer_byte_rate", 5.0),))])
        pair = describe(send, [("user", 0, USER), ("client-id", 2, None)], strict=True)
        assert len(pair[2]) == 1 and dict(pair[2][0][1]) == {
            "request_percentage": 12.5, "consumer_byte_rate": 2048.0}, pair
    finally:
        alter(send, both, [("request_percentage", 0.0, True), ("consumer_byte_rate", 0.0, True)])
        alter(send, [("user", USER)], [("producer_byte_rate", 0.0, True)])
    assert describe(send, [("user", 0, USER)]) == (0, None, [])


def test_two_alterations_of_one_entity_are_refused(send):
    entity = [("client-id", CLIENT + "-dup")]
    r = send(AlterClientQuotasRequest(entries=[
        (entity, [("producer_byte_rate", 10.0, False)]),
        (entity, [("producer_byte_rate", 20.0, False)])], validate_only=False))
    try:
        assert [(e.error_code, e.error_message) for e in r.entries] == [
            (INVALID_REQUEST,
             f"Ignoring duplicate entity ClientQuotaEntity(entries={{client-id={CLIENT}-dup}})")]
    finally:
        alter(send, entity, [("producer_byte_rate", 0.0, True)])


FILTER_REFUSALS = [
    ([("user", 0, None)], INVALID_REQUEST,
     "Request specified MATCH_TYPE_EXACT, but set match string to null."),
    ([("user", 1, "x")], INVALID_REQUEST,
     "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."),
    ([("user", 2, "x")], INVALID_REQUEST,
     "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."),
    ([("group", 2, None)], UNSUPPORTED_VERSION, "Unsupported entity type group"),
    ([("", 2, None)], INVALID_REQUEST, "Invalid empty entity type."),
    ([("user", 2, None), ("user", 1, None)], INVALID_REQUEST,
     "Entity type user cannot appear more than once in the filter."),
    ([("ip", 2, None), ("user", 2, None)], INVALID_REQUEST,
     "Invalid entity filter component combination. IP filter component should not be used "
     "with user or clientId filter component."),
    ([("user", 7, None)], INVALID_REQUEST, "Unknown match type 7"),
]


@pytest.mark.parametrize("components,code,message", FILTER_REFUSALS)
def test_describe_client_quotas_refuses_bad_filters_as_kafka(send, components, code, message):
    assert describe(send, components) == (code, message, None)


def scram(send, deletions, upsertions):
    r = send(AlterUserScramCredentialsRequest(deletions=deletions, upsertions=upsertions))
    return sorted((x.user, x.error_code, x.error_message) for x in r.results)


SALT, SALTED = b"s" * 16, b"p" * 32


def test_scram_credentials_as_kafka(send):
    alice, bob = f"pyq-alice-{RUN}", f"pyq-bob-{RUN}"

    def up(user, mechanism, iterations):
        return (user, mechanism, iterations, SALT, SALTED)

    assert scram(send, [], [up(alice, 1, 8192)]) == [(alice, 0, None)]
    for upsertions, want in [
        ([up(bob, 1, 4095)], (UNACCEPTABLE_CREDENTIAL, "Too few iterations")),
        ([up(bob, 2, 16385)], (UNACCEPTABLE_CREDENTIAL, "Too many iterations")),
        ([up(bob, 0, 8192)], (UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")),
        ([up(bob, 3, 8192)], (UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")),
        ([up(bob, 1, 8192), up(bob, 2, 8192)],
         (DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request")),
    ]:
        assert scram(send, [], upsertions) == [(bob, *want)], upsertions
    assert scram(send, [], [up("", 1, 8192)]) == [
        ("", UNACCEPTABLE_CREDENTIAL, "Username must not be empty")]
    assert scram(send, [(alice, 1)], [up(alice, 2, 8192)]) == [
        (alice, DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request")]
    missing = "Attempt to delete a user credential that does not exist"
    assert scram(send, [(bob, 1)], []) == [(bob, RESOURCE_NOT_FOUND, missing)]
    assert scram(send, [(alice, 2)], []) == [(alice, RESOURCE_NOT_FOUND, missing)]
    assert scram(send, [(alice, 0)], []) == [
        (alice, UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")]

    def described(users):
        r = send(DescribeUserScramCredentialsRequest(users=[(u,) for u in users]))
        assert r.error_code == 0
        return sorted((x.user, x.error_code, x.error_message or None,
                       [(c.mechanism, c.iterations) for c in x.credential_infos])
                      for x in r.results)

    assert described([alice]) == [(alice, 0, None, [(1, 8192)])]
    assert described([bob]) == [(bob, RESOURCE_NOT_FOUND,
                                 f"Attempt to describe a user credential that does not exist: {bob}", [])]
    assert described([alice, alice]) == [(alice, DUPLICATE_RESOURCE,
                                          "Cannot describe SCRAM credentials for the same user "
                                          f"twice in a single request: {alice}", [])]
    assert scram(send, [(alice, 1)], []) == [(alice, 0, None)]
    assert described([alice])[0][1] == RESOURCE_NOT_FOUND
