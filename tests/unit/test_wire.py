"""Unit tests of cfs_cluster.wire: .NET TimeSpan/DateTime texts, enums and property casing."""

from __future__ import annotations

import random

import pytest

from cfs_cluster.errors import BadRequest
from cfs_cluster.protocol.wire import (
    MIN_DATETIME_TEXT,
    TICKS_PER_SECOND,
    ClientRole,
    RoleOverride,
    format_datetime,
    format_timespan,
    normalize_keys,
    parse_datetime,
    parse_enum,
    parse_timespan,
    ticks_from_unix,
    unix_from_ticks,
)

S = TICKS_PER_SECOND
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
TIMESPAN_MAX = 2**63 - 1  # TimeSpan.MaxValue.Ticks
UNIX_EPOCH = 621_355_968_000_000_000  # DateTime(1970, 1, 1).Ticks
DATETIME_MAX = 3_155_378_975_999_999_999  # DateTime.MaxValue.Ticks
# DateTime(2023, 1, 24, 0, 8, 23).Ticks: 738_543 days after 0001-01-01, plus 00:08:23.
T_2023_01_24 = 738_543 * DAY + 8 * MIN + 23 * S


def assert_bad_request_names(exc: BadRequest, field: str) -> None:
    """The error must say which field was wrong, in the text and in the parameters."""
    assert exc.status == 400
    assert field in exc.reason
    assert field in exc.parameters


# --------------------------------------------------------------------------- TimeSpan


class TestParseTimeSpan:
    """parse_timespan: the .NET "c" format, and numbers of seconds, into ticks."""

    @pytest.mark.parametrize(
        ("text", "ticks"),
        [
            pytest.param("00:00:00", 0, id="zero"),
            pytest.param("00:01:00", MIN, id="one-minute"),
            pytest.param("00:00:15", 15 * S, id="adapter-minimum"),
            pytest.param("23:59:59", DAY - S, id="largest-without-days"),
            pytest.param("1.00:00:00", DAY, id="one-day"),
            pytest.param("10675199.02:48:05.4775807", TIMESPAN_MAX, id="TimeSpan.MaxValue"),
            pytest.param(
                "1.02:03:04.5000000", DAY + 2 * HOUR + 3 * MIN + 4 * S + 5_000_000, id="all-fields"
            ),
            pytest.param("00:00:00.0000001", 1, id="one-tick"),
            pytest.param("00:00:00.1234567", 1_234_567, id="seven-digits"),
            pytest.param("00:00:00.5", 5_000_000, id="one-digit-fraction"),
            pytest.param("00:00:00.05", 500_000, id="leading-zero-fraction"),
            pytest.param("-00:00:01", -S, id="negative"),
            pytest.param("-1.00:00:00.0000001", -(DAY + 1), id="negative-days-fraction"),
            pytest.param("08:00", 8 * HOUR, id="hh-mm-without-seconds"),
            pytest.param("1:2:3", HOUR + 2 * MIN + 3 * S, id="single-digit-fields"),
            pytest.param("  00:01:00 ", MIN, id="surrounding-whitespace"),
        ],
    )
    def test_parses_text_to_exact_ticks(self, text: str, ticks: int) -> None:
        assert parse_timespan(text, "FailoverTimeout") == ticks

    @pytest.mark.parametrize(
        ("number", "ticks"),
        [
            pytest.param(0, 0, id="zero"),
            pytest.param(60, MIN, id="int-seconds"),
            pytest.param(1.5, 15_000_000, id="float-seconds"),
            pytest.param(0.1, 1_000_000, id="float-rounds-to-tick"),
            pytest.param(-2, -2 * S, id="negative"),
            pytest.param(10_675_199 * 86_400, 10_675_199 * DAY, id="largest-accepted"),
        ],
    )
    def test_accepts_a_number_of_seconds(self, number: float, ticks: int) -> None:
        assert parse_timespan(number, "FailoverTimeout") == ticks

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("1", id="bare-number-text"),
            pytest.param("01:00:00:00", id="four-parts"),
            pytest.param("24:00:00", id="hours-24"),
            pytest.param("00:60:00", id="minutes-60"),
            pytest.param("00:00:60", id="seconds-60"),
            pytest.param("00:00:00.12345678", id="eight-fraction-digits"),
            pytest.param("00:00:00.", id="dot-without-fraction"),
            pytest.param("1.", id="days-without-time"),
            pytest.param("1:00:00:00", id="days-with-colon"),
            pytest.param("+00:00:01", id="plus-sign"),
            pytest.param("--00:00:01", id="double-minus"),
            pytest.param("- 00:00:01", id="space-after-minus"),
            pytest.param("123.456", id="decimal-text"),
            pytest.param("PT1M", id="iso-8601-duration"),
            pytest.param("aa:bb:cc", id="letters"),
            pytest.param("00:01:00x", id="trailing-garbage"),
            pytest.param("\u0660\u0660:\u0661\u0660:\u0660\u0660", id="arabic-indic-digits"),
            pytest.param("\uff10\uff10:\uff10\uff11:\uff10\uff10", id="full-width-digits"),
            pytest.param("99999999.00:00:00", id="beyond-TimeSpan.MaxValue"),
            pytest.param("10675199.02:48:05.4775808", id="one-tick-beyond-max"),
            pytest.param(None, id="none"),
            pytest.param(True, id="bool"),
            pytest.param(False, id="bool-false"),
            pytest.param(float("nan"), id="nan"),
            pytest.param(float("inf"), id="infinity"),
            pytest.param(-float("inf"), id="minus-infinity"),
            pytest.param(10_675_200 * 86_400, id="number-out-of-range"),
            pytest.param(10**400, id="int-too-large-for-float"),
            pytest.param([1], id="list"),
            pytest.param({"Ticks": 1}, id="object"),
        ],
    )
    def test_refuses_invalid_values_naming_the_field(self, value: object) -> None:
        with pytest.raises(BadRequest) as caught:
            parse_timespan(value, "ExpirationPeriod")
        assert_bad_request_names(caught.value, "ExpirationPeriod")


class TestFormatTimeSpan:
    """format_timespan writes the "c" format exactly as .NET's TimeSpan.ToString() does."""

    @pytest.mark.parametrize(
        ("ticks", "text"),
        [
            pytest.param(0, "00:00:00", id="zero"),
            pytest.param(MIN, "00:01:00", id="one-minute"),
            pytest.param(DAY - S, "23:59:59", id="no-days-part-below-a-day"),
            pytest.param(DAY, "1.00:00:00", id="one-day"),
            pytest.param(1, "00:00:00.0000001", id="one-tick-seven-digits"),
            pytest.param(5_000_000, "00:00:00.5000000", id="half-second-padded"),
            pytest.param(-S, "-00:00:01", id="negative"),
            pytest.param(-(DAY + 1), "-1.00:00:00.0000001", id="negative-day-and-tick"),
            pytest.param(TIMESPAN_MAX, "10675199.02:48:05.4775807", id="TimeSpan.MaxValue"),
        ],
    )
    def test_writes_dotnet_c_format(self, ticks: int, text: str) -> None:
        assert format_timespan(ticks) == text

    @pytest.mark.parametrize(
        "text",
        [
            "00:00:00",
            "00:01:00",
            "08:00:00",
            "1.00:00:00",
            "1.02:03:04.5670000",
            "00:00:00.0000001",
            "00:00:00.9999999",
            "-00:00:00.0000001",
            "-3.04:05:06.0000007",
            "10675199.02:48:05.4775807",
        ],
    )
    def test_canonical_text_round_trips(self, text: str) -> None:
        assert format_timespan(parse_timespan(text, "T")) == text

    def test_ticks_round_trip_exactly(self) -> None:
        """Every tick count survives format then parse, the seventh fractional digit included."""
        rng = random.Random(20240601)
        samples = [rng.randrange(-400 * DAY, 400 * DAY) for _ in range(2000)]
        samples += [rng.randrange(-TIMESPAN_MAX, TIMESPAN_MAX) for _ in range(200)]
        for ticks in samples:
            assert parse_timespan(format_timespan(ticks), "T") == ticks, ticks


# --------------------------------------------------------------------------- DateTime


class TestParseDateTime:
    """parse_datetime: ISO 8601 with up to 7 fractional digits into UTC ticks since 0001-01-01."""

    @pytest.mark.parametrize(
        ("text", "ticks"),
        [
            pytest.param("0001-01-01T00:00:00", 0, id="MinValue-without-Z"),
            pytest.param("0001-01-01T00:00:00Z", 0, id="MinValue-with-Z"),
            pytest.param("0001-01-01T00:00:00.0000001Z", 1, id="one-tick"),
            pytest.param("1970-01-01T00:00:00Z", UNIX_EPOCH, id="unix-epoch"),
            pytest.param("2023-01-24T00:08:23.0570163Z", T_2023_01_24 + 570_163, id="spec-sample"),
            pytest.param("2023-01-24T00:08:23.0570163", T_2023_01_24 + 570_163, id="no-Z-is-UTC"),
            pytest.param("2023-01-24T00:08:23.0570163z", T_2023_01_24 + 570_163, id="lowercase-z"),
            pytest.param("2023-01-24t00:08:23Z", T_2023_01_24, id="lowercase-t"),
            pytest.param("2023-01-24 00:08:23Z", T_2023_01_24, id="space-separator"),
            pytest.param(
                "2023-01-24T00:08:23.5Z", T_2023_01_24 + 5_000_000, id="one-digit-fraction"
            ),
            pytest.param("2023-01-24T00:08:23.000Z", T_2023_01_24, id="milliseconds"),
            pytest.param("2023-01-24T00:08Z", T_2023_01_24 - 23 * S, id="no-seconds"),
            pytest.param("2023-01-24T01:08:23+01:00", T_2023_01_24, id="positive-offset"),
            pytest.param("2023-01-23T18:38:23-05:30", T_2023_01_24, id="negative-half-hour-offset"),
            pytest.param("2023-01-24T01:08:23+0100", T_2023_01_24, id="compact-offset"),
            pytest.param("2023-01-24T00:08:23+00:00", T_2023_01_24, id="zero-offset"),
            pytest.param("2024-02-29T00:00:00Z", 738_944 * DAY, id="leap-day"),
            pytest.param("9999-12-31T23:59:59.9999999Z", DATETIME_MAX, id="MaxValue"),
            pytest.param(" 2023-01-24T00:08:23Z ", T_2023_01_24, id="surrounding-whitespace"),
        ],
    )
    def test_parses_to_utc_ticks(self, text: str, ticks: int) -> None:
        assert parse_datetime(text, "HeartbeatTime") == ticks

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("2023-01-24", id="date-only"),
            pytest.param("00:08:23", id="time-only"),
            pytest.param("2023-02-29T00:00:00Z", id="feb-29-non-leap-year"),
            pytest.param("2023-13-01T00:00:00Z", id="month-13"),
            pytest.param("2023-00-01T00:00:00Z", id="month-0"),
            pytest.param("2023-01-32T00:00:00Z", id="day-32"),
            pytest.param("2023-04-31T00:00:00Z", id="april-31"),
            pytest.param("0000-01-01T00:00:00Z", id="year-0"),
            pytest.param("2023-01-24T24:00:00Z", id="hour-24"),
            pytest.param("2023-01-24T00:60:00Z", id="minute-60"),
            pytest.param("2023-01-24T00:00:60Z", id="second-60"),
            pytest.param("2023-01-24T00:00:00.12345678Z", id="eight-fraction-digits"),
            pytest.param("2023-01-24T00:00:00.Z", id="dot-without-fraction"),
            pytest.param("2023-1-24T00:00:00Z", id="one-digit-month"),
            pytest.param("23-01-24T00:00:00Z", id="two-digit-year"),
            pytest.param("2023/01/24T00:00:00Z", id="slashes"),
            pytest.param("2023-01-24T00:00:00+01", id="offset-without-minutes"),
            pytest.param("2023-01-24T00:00:00+00:99", id="offset-minutes-99"),
            pytest.param("2023-01-24T00:00:00+24:00", id="offset-hours-24"),
            pytest.param("2023-01-24T00:00:00ZZ", id="double-Z"),
            pytest.param("2023-01-24T00:00:00 UTC", id="zone-name"),
            pytest.param("0001-01-01T00:00:00+00:01", id="before-MinValue-after-offset"),
            pytest.param("9999-12-31T23:59:59.9999999-00:01", id="after-MaxValue-after-offset"),
            pytest.param("\uff12\uff10\uff12\uff13-01-24T00:00:00Z", id="full-width-digits"),
            pytest.param("garbage", id="garbage"),
            pytest.param(None, id="none"),
            pytest.param(0, id="number"),
            pytest.param(True, id="bool"),
            pytest.param(["2023-01-24T00:00:00Z"], id="list"),
        ],
    )
    def test_refuses_invalid_dates_naming_the_field(self, value: object) -> None:
        with pytest.raises(BadRequest) as caught:
            parse_datetime(value, "LastDataProcessedTime")
        assert_bad_request_names(caught.value, "LastDataProcessedTime")


class TestFormatDateTime:
    """format_datetime writes 7 fractional digits and Z, and tick 0 as the bare MinValue text."""

    @pytest.mark.parametrize(
        ("ticks", "text"),
        [
            pytest.param(0, "0001-01-01T00:00:00", id="MinValue-without-Z"),
            pytest.param(-5, "0001-01-01T00:00:00", id="negative-clamps-to-MinValue"),
            pytest.param(1, "0001-01-01T00:00:00.0000001Z", id="one-tick"),
            pytest.param(UNIX_EPOCH, "1970-01-01T00:00:00.0000000Z", id="unix-epoch"),
            pytest.param(T_2023_01_24 + 570_163, "2023-01-24T00:08:23.0570163Z", id="spec-sample"),
            pytest.param(DATETIME_MAX, "9999-12-31T23:59:59.9999999Z", id="MaxValue"),
        ],
    )
    def test_writes_dotnet_round_trip_format(self, ticks: int, text: str) -> None:
        assert format_datetime(ticks) == text

    def test_min_text_constant_is_the_dotnet_min_value(self) -> None:
        assert MIN_DATETIME_TEXT == "0001-01-01T00:00:00"
        assert parse_datetime(MIN_DATETIME_TEXT, "T") == 0

    @pytest.mark.parametrize(
        "text",
        [
            "0001-01-01T00:00:00",
            "0001-01-01T00:00:00.0000001Z",
            "2023-01-24T00:08:23.0570163Z",
            "2024-02-29T23:59:59.9999999Z",
            "9999-12-31T23:59:59.9999999Z",
        ],
    )
    def test_canonical_text_round_trips(self, text: str) -> None:
        assert format_datetime(parse_datetime(text, "T")) == text

    def test_ticks_round_trip_exactly(self) -> None:
        """Every tick in range survives format then parse, the seventh fractional digit included."""
        rng = random.Random(20240602)
        for ticks in [rng.randrange(1, DATETIME_MAX + 1) for _ in range(2000)]:
            assert parse_datetime(format_datetime(ticks), "T") == ticks, ticks


class TestUnixConversion:
    """ticks_from_unix / unix_from_ticks convert between time.time() and .NET ticks."""

    def test_unix_epoch_is_the_dotnet_epoch_offset(self) -> None:
        assert ticks_from_unix(0) == UNIX_EPOCH
        assert unix_from_ticks(UNIX_EPOCH) == 0

    def test_conversions_are_inverse(self) -> None:
        ticks = ticks_from_unix(1_674_518_903.5)  # exactly representable as a float
        assert format_datetime(ticks) == "2023-01-24T00:08:23.5000000Z"
        assert unix_from_ticks(ticks) == 1_674_518_903.5

    def test_float_seconds_are_rounded_to_the_nearest_tick(self) -> None:
        """A double holds ~16 digits, so a 2023 timestamp is exact only to about one tick."""
        ticks = ticks_from_unix(1_674_518_903.0570163)
        assert abs(ticks - (T_2023_01_24 + 570_163)) <= 1


# --------------------------------------------------------------------------- enums


class TestParseEnum:
    """parse_enum accepts a name in any casing or a number; everything else is a 400."""

    @pytest.mark.parametrize(
        ("enum", "value", "expected"),
        [
            pytest.param(ClientRole, "Primary", ClientRole.Primary, id="name"),
            pytest.param(ClientRole, "primary", ClientRole.Primary, id="lowercase"),
            pytest.param(ClientRole, "PENDINGPRIMARY", ClientRole.PendingPrimary, id="uppercase"),
            pytest.param(ClientRole, "pEnDiNgPrImArY", ClientRole.PendingPrimary, id="mixed-case"),
            pytest.param(ClientRole, " Secondary ", ClientRole.Secondary, id="padded-name"),
            pytest.param(ClientRole, 0, ClientRole.Secondary, id="number-0"),
            pytest.param(ClientRole, 2, ClientRole.PendingPrimary, id="number-2"),
            pytest.param(ClientRole, "1", ClientRole.Primary, id="numeric-string"),
            pytest.param(ClientRole, " 2 ", ClientRole.PendingPrimary, id="padded-numeric-string"),
            pytest.param(RoleOverride, "off", RoleOverride.Off, id="override-off"),
            pytest.param(RoleOverride, "Primary", RoleOverride.Primary, id="override-primary"),
            pytest.param(RoleOverride, 1, RoleOverride.Primary, id="override-number"),
            pytest.param(RoleOverride, "0", RoleOverride.Off, id="override-numeric-string"),
        ],
    )
    def test_accepts_names_and_numbers(self, enum: type, value: object, expected: object) -> None:
        parsed = parse_enum(enum, value, "Value")
        assert parsed is expected

    @pytest.mark.parametrize(
        ("enum", "value"),
        [
            pytest.param(ClientRole, True, id="bool-true"),
            pytest.param(ClientRole, False, id="bool-false"),
            pytest.param(ClientRole, 3, id="out-of-range"),
            pytest.param(ClientRole, -1, id="negative"),
            pytest.param(ClientRole, "3", id="out-of-range-string"),
            pytest.param(ClientRole, "-1", id="negative-string"),
            pytest.param(ClientRole, 1.0, id="float"),
            pytest.param(ClientRole, "1.0", id="float-string"),
            pytest.param(ClientRole, "", id="empty"),
            pytest.param(ClientRole, "Prim", id="prefix-of-name"),
            pytest.param(ClientRole, "Pending Primary", id="name-with-space"),
            pytest.param(ClientRole, None, id="none"),
            pytest.param(ClientRole, [1], id="list"),
            pytest.param(ClientRole, "--1", id="double-minus"),
            pytest.param(ClientRole, "+1", id="plus-sign"),
            pytest.param(ClientRole, "\u00b2", id="superscript-two"),
            pytest.param(ClientRole, "\u0661", id="arabic-indic-one"),
            pytest.param(ClientRole, "9" * 5000, id="five-thousand-digits"),
            pytest.param(RoleOverride, "Secondary", id="override-secondary-absent"),
            pytest.param(RoleOverride, 2, id="override-out-of-range"),
        ],
    )
    def test_refuses_everything_else_naming_the_field(self, enum: type, value: object) -> None:
        with pytest.raises(BadRequest) as caught:
            parse_enum(enum, value, "Value")
        assert_bad_request_names(caught.value, "Value")
        assert "Primary (1)" in caught.value.reason  # the allowed values are listed


# --------------------------------------------------------------------------- property names


KNOWN = ("Id", "Name", "FailoverTimeout")


class TestNormalizeKeys:
    """normalize_keys maps any casing onto canonical names, like .NET's case-insensitive reader."""

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param({"Id": "g"}, {"Id": "g"}, id="canonical"),
            pytest.param({"id": "g"}, {"Id": "g"}, id="lowercase"),
            pytest.param({"ID": "g"}, {"Id": "g"}, id="uppercase"),
            pytest.param(
                {"failoverTIMEOUT": "00:01:00"}, {"FailoverTimeout": "00:01:00"}, id="mixed"
            ),
            pytest.param(
                {"id": "g", "NAME": None, "failovertimeout": 60},
                {"Id": "g", "Name": None, "FailoverTimeout": 60},
                id="several-keep-values-including-null",
            ),
            pytest.param({"Id": "g", "Extra": 1, "id2": 2}, {"Id": "g"}, id="unknown-ignored"),
            pytest.param({}, {}, id="empty"),
            pytest.param({"Unknown": 1}, {}, id="only-unknown"),
        ],
    )
    def test_maps_any_casing_to_canonical_names(self, body: dict, expected: dict) -> None:
        assert normalize_keys(body, KNOWN) == expected

    @pytest.mark.parametrize(
        ("body", "canonical"),
        [
            pytest.param({"Id": "a", "id": "b"}, "Id", id="canonical-and-lower"),
            pytest.param(
                {"failovertimeout": 1, "FAILOVERTIMEOUT": 2},
                "FailoverTimeout",
                id="lower-and-upper",
            ),
            pytest.param({"name": "x", "Name": "x"}, "Name", id="same-value-still-refused"),
        ],
    )
    def test_refuses_a_property_given_twice_in_different_casing(
        self, body: dict, canonical: str
    ) -> None:
        with pytest.raises(BadRequest) as caught:
            normalize_keys(body, KNOWN)
        assert caught.value.status == 400
        assert canonical in caught.value.reason

    def test_does_not_modify_the_body(self) -> None:
        body = {"id": "g", "Extra": 1}
        normalize_keys(body, KNOWN)
        assert body == {"id": "g", "Extra": 1}


@pytest.mark.parametrize(
    ("role", "ldpt", "epoch", "valid_for"),
    [
        (ClientRole.Secondary, 0, 0, 0),
        (ClientRole.PendingPrimary, 0, 7, 0),
        (ClientRole.Primary, 638_000_000_000_000_000, 123_456, 99_900_000),
        (ClientRole.Primary, 638_000_000_000_000_001, 1, 864_000_000_000 - 1),
    ],
)
def test_heartbeat_payload_is_exactly_the_json_of_the_answer(
    role: ClientRole, ldpt: int, epoch: int, valid_for: int
) -> None:
    """The hand-serialized heartbeat answer (the hot path) must equal json.dumps of the dict."""
    import json

    from cfs_cluster.api.models import heartbeat_json, heartbeat_payload
    from cfs_cluster.protocol.heartbeat import HeartbeatAnswer

    answer = HeartbeatAnswer(role, ldpt, epoch, valid_for, 600_000_000)
    assert heartbeat_payload(answer) == json.dumps(heartbeat_json(answer)).encode()
    assert json.loads(heartbeat_payload(answer))["Role"] == int(role)
