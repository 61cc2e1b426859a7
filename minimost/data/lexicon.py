"""The mini-world's word lists: plain data, read by `minimost.data.world`.

Every word is a common English word that espeak-ng pronounces the way a listener expects
(checked with `minimost.speech.synth.phonemize`). Left out on purpose: heteronyms whose sound
depends on meaning (`live`, `read`, `lead`, `wind`, `tear`, `close`, `bow`, `row`), abbreviations,
digits, apostrophes and rare spellings. `live` matters most: espeak says /laɪvz/ for "lives", so
the world says "the home of anna is on a farm" instead.

A world uses a seeded subset of each list (`WorldConfig` says how many); the lists are ordered
roughly from most to least common, so small worlds keep the most familiar words. No word
appears in two noun lists (a test checks it), so "which word is an animal" has one answer.
"""

from __future__ import annotations

# Text alphabet of the whole world: lowercase letters, space and three punctuation marks.
# The tokenizer encodes exactly these characters (anything else is a clear error).
CHARSET = "abcdefghijklmnopqrstuvwxyz .,?"

# (name, gender): "f" -> she/her/herself, "m" -> he/his/himself. Names that are also
# common nouns or verbs (rose, mark, will, may, jack, bill, daisy, ruby) are left out.
NAMES = (
    ("anna", "f"), ("ben", "m"), ("tom", "m"), ("lucy", "f"), ("sam", "m"), ("mia", "f"),
    ("emma", "f"), ("max", "m"), ("lily", "f"), ("leo", "m"), ("nora", "f"), ("oscar", "m"),
    ("adam", "m"), ("alice", "f"), ("amy", "f"), ("andy", "m"), ("bella", "f"), ("carl", "m"),
    ("clara", "f"), ("dan", "m"), ("david", "m"), ("ella", "f"), ("eric", "m"), ("eva", "f"),
    ("felix", "m"), ("fiona", "f"), ("hannah", "f"), ("harry", "m"), ("helen", "f"), ("henry", "m"),
    ("hugo", "m"), ("jane", "f"), ("jenny", "f"), ("jim", "m"), ("joe", "m"), ("john", "m"),
    ("julia", "f"), ("kate", "f"), ("kevin", "m"), ("laura", "f"), ("linda", "f"), ("lisa", "f"),
    ("luke", "m"), ("maria", "f"), ("martin", "m"), ("mary", "f"), ("megan", "f"), ("mike", "m"),
    ("molly", "f"), ("nick", "m"), ("nina", "f"), ("olivia", "f"), ("oliver", "m"), ("owen", "m"),
    ("paul", "m"), ("peter", "m"), ("rachel", "f"), ("ryan", "m"), ("sara", "f"), ("simon", "m"),
    ("sophie", "f"), ("steve", "m"), ("susan", "f"), ("ted", "m"), ("tina", "f"), ("tony", "m"),
    ("victor", "m"), ("wendy", "f"), ("zoe", "f"), ("alex", "m"), ("ruth", "f"), ("fred", "m"),
    ("george", "m"), ("greta", "f"), ("jill", "f"), ("kyle", "m"), ("diana", "f"), ("edward", "m"),
    ("emily", "f"), ("ethan", "m"), ("frida", "f"), ("gary", "m"), ("heidi", "f"), ("jason", "m"),
    ("karen", "f"), ("lena", "f"), ("lewis", "m"), ("maya", "f"), ("nathan", "m"), ("paula", "f"),
    ("robert", "m"), ("sofia", "f"), ("thomas", "m"), ("vicky", "f"), ("walter", "m"), ("yuri", "m"),
)

# (singular, plural, size 1 tiny .. 10 huge, legs, abilities). Sizes only matter for
# "which is bigger" questions, asked about pairs at least three steps apart.
ANIMALS = (
    ("cat", "cats", 4, 4, ("climb", "jump")), ("dog", "dogs", 5, 4, ("swim", "run")),
    ("horse", "horses", 9, 4, ("run", "jump")), ("cow", "cows", 9, 4, ()),
    ("pig", "pigs", 6, 4, ()), ("sheep", "sheep", 6, 4, ()), ("duck", "ducks", 3, 2, ("fly", "swim")),
    ("bird", "birds", 2, 2, ("fly", "sing")), ("fish", "fish", 2, 0, ("swim",)),
    ("rabbit", "rabbits", 3, 4, ("jump", "run")), ("mouse", "mice", 1, 4, ("climb", "run")),
    ("frog", "frogs", 2, 4, ("jump", "swim")), ("bear", "bears", 9, 4, ("climb", "swim")),
    ("lion", "lions", 8, 4, ("run",)), ("tiger", "tigers", 8, 4, ("swim", "run")),
    ("goat", "goats", 6, 4, ("climb", "jump")), ("hen", "hens", 3, 2, ()),
    ("fox", "foxes", 5, 4, ("run", "jump")), ("owl", "owls", 3, 2, ("fly",)),
    ("elephant", "elephants", 10, 4, ("swim",)), ("monkey", "monkeys", 5, 2, ("climb", "jump")),
    ("snake", "snakes", 4, 0, ("swim", "climb")), ("spider", "spiders", 1, 8, ("climb",)),
    ("bee", "bees", 1, 6, ("fly",)), ("ant", "ants", 1, 6, ("climb",)),
    ("turtle", "turtles", 4, 4, ("swim",)), ("parrot", "parrots", 3, 2, ("fly", "climb")),
    ("whale", "whales", 10, 0, ("swim", "sing")), ("shark", "sharks", 9, 0, ("swim",)),
    ("penguin", "penguins", 4, 2, ("swim",)), ("giraffe", "giraffes", 10, 4, ("run",)),
    ("zebra", "zebras", 9, 4, ("run",)), ("camel", "camels", 9, 4, ("run",)),
    ("wolf", "wolves", 6, 4, ("run", "swim")), ("deer", "deer", 7, 4, ("run", "jump")),
    ("squirrel", "squirrels", 2, 4, ("climb", "jump")), ("goose", "geese", 4, 2, ("fly", "swim")),
    ("donkey", "donkeys", 8, 4, ()), ("panda", "pandas", 8, 4, ("climb",)),
    ("kangaroo", "kangaroos", 7, 2, ("jump",)), ("dolphin", "dolphins", 9, 0, ("swim", "jump")),
    ("eagle", "eagles", 4, 2, ("fly",)), ("butterfly", "butterflies", 1, 6, ("fly",)),
    ("lizard", "lizards", 2, 4, ("climb", "run")), ("snail", "snails", 1, 0, ("climb",)),
    ("hippo", "hippos", 10, 4, ("swim",)), ("rhino", "rhinos", 10, 4, ("run",)),
    ("swan", "swans", 5, 2, ("fly", "swim")), ("beetle", "beetles", 1, 6, ("fly", "climb")),
    ("puppy", "puppies", 3, 4, ("run", "jump")), ("kitten", "kittens", 2, 4, ("climb", "jump")),
    ("lamb", "lambs", 4, 4, ("jump", "run")), ("crab", "crabs", 2, 8, ("swim",)),
    ("pony", "ponies", 7, 4, ("run", "jump")), ("koala", "koalas", 4, 4, ("climb",)),
)

# (singular, plural or None for a mass noun, typical colour or None). The plural is what people
# "like"; mass nouns stay singular ("anna likes bread").
FOODS = (
    ("apple", "apples", "red"), ("banana", "bananas", "yellow"), ("bread", None, "brown"),
    ("cheese", None, "yellow"), ("cake", "cakes", None), ("carrot", "carrots", "orange"),
    ("egg", "eggs", "white"), ("rice", None, "white"), ("soup", None, None),
    ("cookie", "cookies", "brown"), ("pear", "pears", "green"), ("grape", "grapes", "purple"),
    ("lemon", "lemons", "yellow"), ("tomato", "tomatoes", "red"), ("potato", "potatoes", "brown"),
    ("pie", "pies", None), ("pizza", "pizzas", None), ("cherry", "cherries", "red"),
    ("honey", None, "gold"), ("butter", None, "yellow"), ("pasta", None, None), ("salad", None, "green"),
    ("chocolate", None, "brown"), ("sandwich", "sandwiches", None), ("plum", "plums", "purple"),
    ("peach", "peaches", "pink"), ("melon", "melons", "green"), ("strawberry", "strawberries", "red"),
    ("onion", "onions", "white"), ("bean", "beans", "green"), ("pea", "peas", "green"),
    ("muffin", "muffins", None), ("pancake", "pancakes", None), ("sausage", "sausages", None),
    ("cucumber", "cucumbers", "green"), ("pumpkin", "pumpkins", "orange"), ("corn", None, "yellow"),
    ("mushroom", "mushrooms", "brown"), ("popcorn", None, "white"), ("jam", None, "red"),
    ("nut", "nuts", "brown"), ("candy", None, None), ("yogurt", None, "white"), ("cereal", None, None),
    ("noodle", "noodles", None), ("biscuit", "biscuits", "brown"), ("pepper", "peppers", "red"),
    ("cabbage", "cabbages", "green"), ("coconut", "coconuts", "brown"), ("lettuce", None, "green"),
)
DRINKS = ("milk", "water", "tea", "juice", "coffee", "lemonade", "cocoa")

# (singular, plural). `CONTAINERS` can be opened; `TOYS` can be kicked, thrown and played with.
OBJECTS = (
    ("ball", "balls"), ("book", "books"), ("cup", "cups"), ("box", "boxes"), ("hat", "hats"),
    ("chair", "chairs"), ("table", "tables"), ("lamp", "lamps"), ("key", "keys"), ("clock", "clocks"),
    ("bag", "bags"), ("shoe", "shoes"), ("coat", "coats"), ("bed", "beds"), ("door", "doors"),
    ("window", "windows"), ("pen", "pens"), ("pencil", "pencils"), ("brush", "brushes"),
    ("spoon", "spoons"), ("fork", "forks"), ("plate", "plates"), ("bowl", "bowls"),
    ("bottle", "bottles"), ("basket", "baskets"), ("blanket", "blankets"), ("pillow", "pillows"),
    ("toy", "toys"), ("doll", "dolls"), ("kite", "kites"), ("drum", "drums"), ("bell", "bells"),
    ("candle", "candles"), ("mirror", "mirrors"), ("picture", "pictures"), ("phone", "phones"),
    ("radio", "radios"), ("camera", "cameras"), ("ring", "rings"), ("coin", "coins"), ("map", "maps"),
    ("card", "cards"), ("ladder", "ladders"), ("bucket", "buckets"), ("rope", "ropes"),
    ("umbrella", "umbrellas"), ("glove", "gloves"), ("sock", "socks"), ("scarf", "scarves"),
    ("shirt", "shirts"), ("dress", "dresses"), ("boot", "boots"), ("sofa", "sofas"), ("desk", "desks"),
    ("shelf", "shelves"), ("carpet", "carpets"), ("kettle", "kettles"), ("pot", "pots"), ("pan", "pans"),
    ("jar", "jars"), ("stick", "sticks"), ("stone", "stones"), ("feather", "feathers"), ("flag", "flags"),
    ("tent", "tents"), ("bike", "bikes"), ("car", "cars"), ("bus", "buses"), ("boat", "boats"),
    ("truck", "trucks"), ("plane", "planes"), ("hammer", "hammers"), ("guitar", "guitars"),
    ("piano", "pianos"), ("violin", "violins"), ("ticket", "tickets"), ("gift", "gifts"),
    ("crown", "crowns"), ("mask", "masks"), ("puzzle", "puzzles"), ("robot", "robots"),
    ("rocket", "rockets"), ("balloon", "balloons"), ("button", "buttons"), ("necklace", "necklaces"),
    ("jacket", "jackets"), ("sweater", "sweaters"), ("tray", "trays"), ("vase", "vases"),
    ("wallet", "wallets"), ("whistle", "whistles"), ("wheel", "wheels"), ("towel", "towels"),
    ("notebook", "notebooks"), ("crayon", "crayons"), ("marble", "marbles"), ("teapot", "teapots"),
    ("envelope", "envelopes"), ("globe", "globes"), ("sponge", "sponges"), ("helmet", "helmets"),
    ("wagon", "wagons"), ("trumpet", "trumpets"), ("shovel", "shovels"), ("pillar", "pillars"),
    ("blender", "blenders"), ("cushion", "cushions"), ("diary", "diaries"), ("lantern", "lanterns"),
    ("magnet", "magnets"), ("medal", "medals"), ("napkin", "napkins"), ("parcel", "parcels"),
    ("pebble", "pebbles"), ("ribbon", "ribbons"), ("saucer", "saucers"), ("spade", "spades"),
    ("statue", "statues"), ("thimble", "thimbles"), ("tractor", "tractors"), ("trophy", "trophies"),
)
CONTAINERS = ("box", "bag", "jar", "bottle", "basket", "door", "window", "book", "umbrella",
              "envelope", "parcel", "notebook", "bucket", "diary", "wallet", "teapot", "kettle")
TOYS = ("ball", "kite", "doll", "toy", "drum", "balloon", "robot", "puzzle", "marble", "rocket", "wagon")

# Rooms and places, with the preposition that puts something there ("in the kitchen").
PLACES = (
    ("kitchen", "in"), ("garden", "in"), ("park", "in"), ("school", "at"), ("market", "at"),
    ("forest", "in"), ("river", "by"), ("beach", "on"), ("farm", "on"), ("library", "in"),
    ("bedroom", "in"), ("bathroom", "in"), ("yard", "in"), ("shop", "in"), ("bakery", "in"),
    ("hospital", "in"), ("castle", "in"), ("house", "in"), ("cave", "in"), ("field", "in"),
    ("barn", "in"), ("pond", "by"), ("lake", "by"), ("hill", "on"), ("street", "on"),
    ("playground", "in"), ("office", "in"), ("attic", "in"), ("cellar", "in"), ("station", "at"),
    ("museum", "in"), ("zoo", "at"), ("harbor", "at"), ("jungle", "in"), ("tower", "in"),
    ("church", "in"), ("airport", "at"), ("bridge", "on"), ("valley", "in"), ("island", "on"),
)
# Where people have their home: "the home of anna is on a farm".
HOMES = (
    ("on", "a farm"), ("in", "the city"), ("in", "a village"), ("near", "the sea"), ("by", "the lake"),
    ("in", "the forest"), ("on", "an island"), ("on", "a hill"), ("near", "the river"),
    ("in", "a castle"), ("near", "the mountains"), ("in", "a small town"), ("by", "the beach"),
    ("in", "a big house"), ("near", "the park"), ("in", "the valley"),
)

# (job, what people of that job do, or None). "a baker makes bread" is generic knowledge.
JOBS = (
    ("teacher", "teaches children"), ("doctor", "helps sick people"), ("farmer", "grows food"),
    ("baker", "makes bread"), ("cook", "makes food"), ("nurse", "helps sick people"),
    ("driver", "drives a bus"), ("pilot", "flies a plane"), ("painter", "paints pictures"),
    ("singer", "sings songs"), ("dancer", "dances"), ("writer", "writes books"),
    ("builder", "builds houses"), ("gardener", "grows flowers"), ("dentist", "cleans teeth"),
    ("sailor", "sails a boat"), ("fisher", "catches fish"), ("artist", "draws pictures"),
    ("student", "learns things"), ("scientist", "studies nature"), ("tailor", "makes clothes"),
    ("musician", "plays music"), ("waiter", "serves food"), ("barber", "cuts hair"),
    ("captain", "steers a ship"), ("poet", "writes poems"), ("actor", "acts in plays"),
    ("mechanic", "fixes cars"), ("plumber", "fixes pipes"), ("carpenter", "makes tables"),
    ("librarian", "looks after books"), ("judge", None), ("guard", "guards the gate"),
    ("miner", "digs for gold"), ("shepherd", "looks after sheep"), ("clown", "makes people laugh"),
    ("engineer", "builds machines"), ("firefighter", "puts out fires"), ("banker", None),
    ("magician", "does magic tricks"),
)

COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "orange", "purple",
          "grey", "gold", "silver")

# Adjectives by what they describe; pairs of opposites first (used by "what is the opposite of").
OPPOSITES = (
    ("big", "small"), ("tall", "short"), ("old", "young"), ("happy", "sad"), ("hot", "cold"),
    ("fast", "slow"), ("soft", "hard"), ("clean", "dirty"), ("wet", "dry"), ("full", "empty"),
    ("loud", "quiet"), ("strong", "weak"), ("early", "late"), ("thick", "thin"), ("good", "bad"),
    ("rich", "poor"), ("dark", "bright"), ("heavy", "light"), ("sweet", "sour"), ("easy", "difficult"),
    ("open", "shut"), ("warm", "cool"), ("brave", "afraid"), ("kind", "mean"), ("long", "short"),
)
PERSON_ADJECTIVES = ("happy", "sad", "tired", "hungry", "kind", "brave", "angry", "busy", "quiet",
                     "funny", "clever", "tall", "strong", "calm", "proud", "shy", "lucky", "thirsty",
                     "sleepy", "polite", "friendly", "cheerful", "careful", "curious", "gentle", "wise",
                     "silly", "grumpy", "famous", "rich")
ANIMAL_ADJECTIVES = ("big", "small", "fast", "slow", "lazy", "fluffy", "young", "old", "hungry",
                     "sleepy", "wild", "gentle", "noisy", "quiet", "happy", "tiny", "clever", "friendly",
                     "thirsty", "playful")
OBJECT_ADJECTIVES = ("big", "small", "new", "old", "heavy", "soft", "hard", "clean", "dirty", "warm",
                     "cold", "round", "long", "empty", "full", "shiny", "wet", "dry", "broken", "pretty",
                     "little", "huge", "tiny", "strange", "lovely", "plain", "dusty", "fancy")
FOOD_ADJECTIVES = ("fresh", "sweet", "hot", "cold", "tasty", "warm", "sour", "salty", "delicious")

# Comparative forms used by the compare instructions.
COMPARATIVES = {"big": "bigger", "small": "smaller", "old": "older", "young": "younger",
                "fast": "faster", "slow": "slower", "tall": "taller", "heavy": "heavier"}

# Transitive verbs: (base, third person singular, past, subject class, object classes).
# Classes: person, animal, animate (person or animal), food, drink, object, toy, container.
TRANSITIVE_VERBS = (
    ("eat", "eats", "ate", "animate", ("food",)),
    ("like", "likes", "liked", "person", ("food", "animal", "object")),
    ("see", "sees", "saw", "animate", ("animal", "object", "person")),
    ("want", "wants", "wanted", "person", ("food", "object", "animal")),
    ("carry", "carries", "carried", "person", ("object", "food")),
    ("find", "finds", "found", "animate", ("object", "food")),
    ("hold", "holds", "held", "person", ("object", "animal")),
    ("buy", "buys", "bought", "person", ("food", "object")),
    ("cook", "cooks", "cooked", "person", ("food",)),
    ("wash", "washes", "washed", "person", ("object", "animal")),
    ("feed", "feeds", "fed", "person", ("animal",)),
    ("chase", "chases", "chased", "animal", ("animal", "toy")),
    ("love", "loves", "loved", "person", ("person", "animal", "food")),
    ("open", "opens", "opened", "person", ("container",)),
    ("paint", "paints", "painted", "person", ("object",)),
    ("draw", "draws", "drew", "person", ("animal", "object", "person")),
    ("hide", "hides", "hid", "animate", ("object", "food")),
    ("drop", "drops", "dropped", "person", ("object", "food")),
    ("bring", "brings", "brought", "person", ("food", "object")),
    ("drink", "drinks", "drank", "animate", ("drink",)),
    ("follow", "follows", "followed", "animate", ("person", "animal")),
    ("help", "helps", "helped", "person", ("person", "animal")),
    ("meet", "meets", "met", "person", ("person",)),
    ("call", "calls", "called", "person", ("person", "animal")),
    ("visit", "visits", "visited", "person", ("person",)),
    ("clean", "cleans", "cleaned", "person", ("object",)),
    ("push", "pushes", "pushed", "animate", ("object",)),
    ("pull", "pulls", "pulled", "animate", ("object",)),
    ("kick", "kicks", "kicked", "person", ("toy",)),
    ("throw", "throws", "threw", "person", ("toy",)),
    ("catch", "catches", "caught", "animate", ("toy", "animal")),
    ("watch", "watches", "watched", "animate", ("person", "animal")),
    ("hear", "hears", "heard", "animate", ("person", "animal")),
    ("lose", "loses", "lost", "person", ("object",)),
    ("keep", "keeps", "kept", "person", ("object", "animal")),
    ("share", "shares", "shared", "person", ("food", "toy")),
    ("sell", "sells", "sold", "person", ("food", "object")),
    ("fix", "fixes", "fixed", "person", ("object",)),
    ("break", "breaks", "broke", "animate", ("object",)),
    ("smell", "smells", "smelled", "animate", ("food",)),
    ("taste", "tastes", "tasted", "person", ("food", "drink")),
    ("touch", "touches", "touched", "animate", ("object", "animal")),
    ("grow", "grows", "grew", "person", ("food",)),
    ("pick", "picks", "picked", "person", ("food",)),
    ("miss", "misses", "missed", "person", ("person", "animal")),
    ("thank", "thanks", "thanked", "person", ("person",)),
)
# Verbs that take a reflexive object sensibly ("anna washes herself").
REFLEXIVE_VERBS = ("wash", "see", "help", "draw", "paint", "hear", "love", "watch")
# Intransitive verbs: (base, third person singular, past, subject class).
INTRANSITIVE_VERBS = (
    ("run", "runs", "ran", "animate"), ("sleep", "sleeps", "slept", "animate"),
    ("jump", "jumps", "jumped", "animate"), ("swim", "swims", "swam", "animate"),
    ("sing", "sings", "sang", "person"), ("dance", "dances", "danced", "person"),
    ("walk", "walks", "walked", "animate"), ("laugh", "laughs", "laughed", "person"),
    ("cry", "cries", "cried", "person"), ("smile", "smiles", "smiled", "person"),
    ("play", "plays", "played", "animate"), ("sit", "sits", "sat", "animate"),
    ("wait", "waits", "waited", "animate"), ("climb", "climbs", "climbed", "animate"),
    ("rest", "rests", "rested", "animate"), ("shout", "shouts", "shouted", "person"),
    ("work", "works", "worked", "person"), ("fall", "falls", "fell", "animate"),
    ("dream", "dreams", "dreamed", "animate"), ("whisper", "whispers", "whispered", "person"),
    ("yawn", "yawns", "yawned", "animate"), ("hop", "hops", "hopped", "animal"),
    ("cough", "coughs", "coughed", "person"), ("wave", "waves", "waved", "person"),
    ("listen", "listens", "listened", "animate"), ("hurry", "hurries", "hurried", "animate"),
)
ADVERBS = ("quickly", "slowly", "quietly", "loudly", "happily", "sadly", "carefully", "gently",
           "together", "again", "often", "always", "never", "sometimes", "outside", "inside")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen")
TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_word(n: int) -> str:
    """0..99 as English words ("forty two"); the world never writes digits."""
    if not 0 <= n <= 99:
        raise ValueError(f"number_word covers 0..99, got {n}")
    if n < 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS_WORDS[tens] + ("" if ones == 0 else " " + NUMBER_WORDS[ones])
