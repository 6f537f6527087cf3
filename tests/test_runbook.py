"""The runbook is the team's file, parsed at run time; these use a small runbook of our own."""

from pathlib import Path

from bot.runbook import Runbook

RUNBOOK = Path(__file__).parent / "fixtures" / "runbook.md"


def rb() -> Runbook:
    return Runbook.load(RUNBOOK, url="https://git.example/runbook.md")


def test_sections_are_numbered_headings_only():
    book = rb()
    assert set(book.sections) == {"4", "4.1", "5", "5.1", "5.2", "5.3", "3", "3.2", "7", "7.2",
                                 "10", "10.2", "11", "11.3"}
    assert book.get("5.1").title == "Vault Sealed After Restart"
    assert book.get("9.9") is None  # inside a code block


def test_labelled_parts_and_severity():
    section = rb().get("5.1")
    assert section.severity == "P1"
    assert "0/1 Ready" in section.part("symptom")
    assert "Shamir" in section.part("root cause")
    assert "submit them" in section.part("resolution")
    assert section.part("escalation").startswith("Lost shares")
    assert rb().get("4.1").severity == "P2"


def test_links_use_github_anchors():
    assert rb().link("3.2") == ("https://git.example/runbook.md"
                                "#32-l2-announcement-not-working-no-arp-responses")
    assert Runbook.load(RUNBOOK).link("3.2") is None  # no URL configured


def test_search_ranks_the_section_that_names_the_symptom():
    book = rb()
    assert book.search("certificate has expired")[0][0].number == "4.1"
    assert book.search("ARP")[0][0].number == "3.2"
    assert book.search("leader")[0][0].number == "5.3"
    assert book.search("the and of") == []


def test_sub_problems_keep_their_own_parts():
    book = rb()
    keycloak = book.get("7.2")
    assert [s.number for s in keycloak.subs] == ["7.2/oidc", "7.2/infinispan"]
    oidc, cache = book.get("7.2/oidc"), book.get("7.2/infinispan")
    assert "redirects loop" in oidc.part("symptom") and oidc.severity == "P2"
    assert "client secret" in oidc.part("root cause") and "copy the client secret" in oidc.part("resolution")
    assert "do not discover" in cache.part("root cause") and cache.severity == "P3"
    assert "redirects loop" not in cache.body
    # The parent keeps only its own text: the later sub-problem did not overwrite the earlier.
    assert keycloak.part("symptom") == "" and keycloak.part("note") == "see also 9.4."
    assert book.get("7.2/oidc-authentication") is oidc  # any unique start of the heading's words
    assert book.get("7.2/nope") is None
    assert book.link("7.2/oidc") == "https://git.example/runbook.md#oidc-authentication-failures"


def test_entries_are_leaves_and_sub_problems_but_not_procedure_steps():
    numbers = [e.number for e in rb().entries()]
    assert numbers == ["4.1", "5.1", "5.2", "5.3", "3.2", "7.2/oidc", "7.2/infinispan", "10.2", "11.3"]
    assert rb().get("11.3").subs == [] and "Evict what runs there" in rb().get("11.3").own


def test_search_finds_a_sub_problem_itself():
    hits = rb().search("single sign-on redirects")
    assert hits[0][0].number == "7.2/oidc"
    assert "7.2" not in [s.number for s, _ in hits]  # the parent has no text of its own to match
