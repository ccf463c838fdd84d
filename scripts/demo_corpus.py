"""Training corpus of npqwen's tiny demo model (see scripts/train_demo.py). Rebuilt with no network.

Everything comes from this file or from what the Python interpreter ships:

* Chinese and English prose, proverbs and ChatML dialogues written for this repository (below);
* the Zen of Python, decoded from the `this` module (rot13);
* docstrings of a fixed list of standard-library modules, read with `inspect.getdoc`.

The order is fixed and the only randomness is `random.Random(SEED)`, so the corpus is
byte-identical on a given Python version. The docstrings change between Python releases:
train_demo.py records the Python version and the corpus's sha256 next to the results.

Documents carry a group name (one proverb with all its framings, one dialogue topic, one
stdlib module, ...). About 5% of the documents, whole groups at a time, are held out as the
validation split, so that near-copies of a held-out document are not in the training split.
Groups containing the demo's acceptance proverb (PROVERB) always stay in training.

    python scripts/demo_corpus.py          # prints statistics of the two splits

Build it in a fresh interpreter (load_split() does): packages imported beforehand can change what
the standard library shows, e.g. transformers adds methods to logging.Logger.
"""

import codecs
import contextlib
import importlib
import inspect
import io
import json
import os
import random
import subprocess
import sys

SEED = 20240611
VALID_FRACTION = 0.05
PROVERB = "学习如逆水行舟,不进则退"  # ASCII comma, exactly this form: the demo's acceptance check
SYSTEM = "You are a helpful assistant."  # the chat template's default system message

# --------------------------------------------------------------------------------------------
# Proverbs: (proverb, meaning in Chinese, English rendering)
# --------------------------------------------------------------------------------------------
PROVERBS = [
    (PROVERB, "学习就像在逆流中划船,如果不努力向前,就会被水冲得后退。所以学习要坚持,一天也不能放松。",
     "Learning is like rowing a boat against the current: if you do not move forward, you fall back."),
    ("千里之行,始于足下", "再远的路,也要从脚下的第一步开始走。做大事要从小事做起。",
     "A journey of a thousand miles begins with a single step."),
    ("三人行,必有我师焉", "几个人走在一起,其中一定有值得我学习的人。我们应该虚心向别人学习。",
     "When three people walk together, one of them can be my teacher."),
    ("温故而知新", "复习学过的知识,常常能得到新的理解和体会。",
     "Review the old and you will learn something new."),
    ("学而不思则罔,思而不学则殆", "只读书而不思考,就会迷惑;只空想而不读书,就会陷入危险。",
     "Learning without thinking is useless; thinking without learning is dangerous."),
    ("书山有路勤为径,学海无涯苦作舟", "读书的路上,勤奋是唯一的小路;知识的海洋没有边际,刻苦就是渡海的船。",
     "Diligence is the path up the mountain of books, and hard work is the boat across the sea of learning."),
    ("少壮不努力,老大徒伤悲", "年轻的时候不努力,到老了只能后悔和难过。",
     "If you do not work hard when you are young, you will only regret it when you are old."),
    ("一寸光阴一寸金,寸金难买寸光阴", "时间像金子一样宝贵,而且用金子也买不回失去的时间。",
     "An inch of time is an inch of gold, but gold cannot buy time."),
    ("冰冻三尺,非一日之寒", "河面结了三尺厚的冰,不是一天的寒冷造成的。任何结果都有长期的原因。",
     "Three feet of ice does not form in a single day of cold."),
    ("不积跬步,无以至千里", "不把一小步一小步积累起来,就不能走到千里之外。",
     "Without small steps, you cannot travel a thousand miles."),
    ("知之为知之,不知为不知,是知也", "知道就是知道,不知道就是不知道,这才是真正的智慧。",
     "To know what you know and to know what you do not know, that is true knowledge."),
    ("有志者事竟成", "只要有坚定的志向,事情终究能够成功。",
     "Where there is a will, there is a way."),
    ("活到老,学到老", "人的一生都应该不断学习,年纪大了也不要停下来。",
     "One is never too old to learn."),
    ("百闻不如一见", "听别人说一百次,不如自己亲眼看一次。",
     "Seeing once is better than hearing a hundred times."),
    ("失败是成功之母", "失败能让我们找到问题,吸取教训,最后走向成功。",
     "Failure is the mother of success."),
    ("己所不欲,勿施于人", "自己不愿意的事情,不要强加给别人。",
     "Do not do to others what you would not want done to yourself."),
    ("欲速则不达", "做事情太求快,反而达不到目的。",
     "More haste, less speed."),
    ("磨刀不误砍柴工", "花时间把刀磨快,并不会耽误砍柴,反而能砍得更快。做好准备很重要。",
     "Sharpening the axe does not delay the cutting of wood."),
    ("三天打鱼,两天晒网", "做事没有恒心,时而努力时而放松,这样是学不好的。",
     "Fishing for three days and drying the nets for two: working by fits and starts."),
    ("一分耕耘,一分收获", "付出多少努力,就会得到多少收获。",
     "You reap what you sow."),
    ("读书破万卷,下笔如有神", "读的书多了,写文章的时候就会文思泉涌,好像有神相助。",
     "Read ten thousand books and your pen will write as if guided by a spirit."),
    ("水滴石穿", "水一滴一滴地落下,时间长了也能把石头滴穿。只要坚持,小的力量也能做成大事。",
     "Constant dripping wears away the stone."),
    ("万事开头难", "做任何事情,最难的往往是开始的那一步。",
     "All things are difficult before they are easy."),
    ("笨鸟先飞", "能力差一点的人,要比别人更早开始,更加努力。",
     "The slow bird should set off early."),
    ("勤能补拙", "勤奋可以弥补天资的不足。",
     "Diligence makes up for lack of talent."),
    ("吃一堑,长一智", "受一次挫折,就增长一分见识。",
     "A fall into the pit, a gain in your wit."),
    ("众人拾柴火焰高", "大家一起捡柴,火就烧得旺。人多力量大。",
     "When everyone adds wood, the fire burns high."),
    ("授人以鱼不如授人以渔", "送给别人一条鱼,不如教会他怎样钓鱼。",
     "Give a man a fish and you feed him for a day; teach him to fish and you feed him for a lifetime."),
    ("路遥知马力,日久见人心", "路走远了才知道马的力气大小,时间长了才能看清一个人的心。",
     "A long road tests a horse's strength; a long time reveals a person's heart."),
    ("良药苦口利于病,忠言逆耳利于行", "好药虽然苦,却能治病;真诚的劝告虽然不好听,却对行动有好处。",
     "Good medicine tastes bitter; honest advice is hard to hear."),
    ("近朱者赤,近墨者黑", "接近好人会变好,接近坏人会变坏。环境对人的影响很大。",
     "He who stays near vermilion gets stained red; he who stays near ink gets stained black."),
    ("守株待兔", "一个农夫看到兔子撞死在树桩上,就天天守在树旁等兔子。比喻不努力而希望得到意外的收获。",
     "Waiting by a tree stump for a rabbit to run into it."),
    ("画蛇添足", "给蛇画上脚,反而不像蛇了。比喻做了多余的事,反而把事情弄糟。",
     "Drawing legs on a snake: ruining something by adding what is not needed."),
    ("亡羊补牢,为时未晚", "羊丢了以后修补羊圈,还不算太晚。出了问题及时改正就好。",
     "It is not too late to mend the pen after a sheep is lost."),
    ("井底之蛙", "井底的青蛙只能看到井口那么大的天。比喻见识短浅的人。",
     "A frog at the bottom of a well: someone with a narrow view."),
    ("塞翁失马,焉知非福", "坏事有时候也会变成好事。",
     "A blessing in disguise."),
    ("锲而不舍,金石可镂", "只要坚持不停地雕刻,连金属和石头也能刻出花纹。",
     "Keep carving without stopping, and even metal and stone can be engraved."),
    ("纸上得来终觉浅,绝知此事要躬行", "从书本上得到的知识终究是浅的,要真正懂得,必须亲自去实践。",
     "Knowledge from books is shallow; to truly understand, you must practise it yourself."),
    ("宝剑锋从磨砺出,梅花香自苦寒来", "宝剑的锋利是磨出来的,梅花的香气来自寒冷的冬天。",
     "The sharp edge of a sword comes from grinding; the fragrance of plum blossoms comes from the bitter cold."),
    ("行百里者半九十", "走一百里路,走了九十里也只能算走了一半。越接近成功越要坚持。",
     "Ninety miles is only half of a hundred-mile journey."),
    ("敏而好学,不耻下问", "聪明又爱学习,不把向地位低的人请教当作羞耻。",
     "Be quick and eager to learn, and never ashamed to ask."),
    ("业精于勤,荒于嬉", "学业因为勤奋而精通,因为玩乐而荒废。",
     "Mastery comes from diligence and is lost in play."),
    ("三思而后行", "做事之前要多想一想,考虑清楚再行动。",
     "Think three times before you act."),
    ("天下无难事,只怕有心人", "世界上没有办不成的难事,只要肯下决心去做。",
     "Nothing in the world is difficult for one who sets his mind to it."),
    ("一年之计在于春,一日之计在于晨", "一年的打算要在春天做好,一天的打算要在早上做好。",
     "The whole year's work depends on a good start in spring."),
    ("退一步海阔天空", "在争执中让一步,就会觉得天地宽广,心情开朗。",
     "Take a step back and the sea and sky open wide."),
    ("进退两难", "前进和后退都很困难,比喻处境十分为难。",
     "Caught between advancing and retreating."),
    ("熟能生巧", "做得多了,熟练了,自然就能找到巧妙的办法。",
     "Practice makes perfect."),
]

PROVERB_TEMPLATES = [
    "俗话说:“{p}”。{m}",
    "{p}。这句话告诉我们:{m}",
    "老师在黑板上写下了“{p}”这几个字,然后对同学们说:{m}",
    "谚语:{p}\n意思:{m}\n英文:{e}",
    "The Chinese saying \"{p}\" means: {e}",
    "中文:{p}\nEnglish: {e}",
    "爷爷常常对我说:“{p}。”小时候我不明白,后来才懂得:{m}",
    "今天我们学习一句名言:{p}。{m}请大家把它抄在本子上。",
]

# --------------------------------------------------------------------------------------------
# Chinese prose written for this corpus. Paragraphs are separated by blank lines; each
# paragraph is one document of its own group.
# --------------------------------------------------------------------------------------------
ZH_PROSE = """
学习如逆水行舟,不进则退。这是我上中学时班主任最喜欢说的一句话。每次考试以后,她都会把这句话写在黑板的右上角,提醒我们不要骄傲,也不要灰心。

春天来了,小草从地里探出头来,柳树长出了嫩绿的叶子。燕子从南方飞回来,在屋檐下筑起了新的窝。孩子们脱下厚厚的棉衣,在田野里放风筝。

夏天的中午,太阳火辣辣的,知了在树上不停地叫。妈妈切开一个大西瓜,红红的瓜瓤,黑黑的瓜子,吃一口又甜又凉。傍晚,一场雷雨过后,天边挂起了彩虹。

秋天是收获的季节。稻田里一片金黄,果园里的苹果红了,梨也黄了。农民伯伯脸上露出了笑容。树叶一片一片地落下来,像一只只蝴蝶在空中飞舞。

冬天,北风呼呼地吹,天上飘下了洁白的雪花。第二天早上,屋顶上、树枝上、大地上都铺上了一层厚厚的雪。我和弟弟堆了一个大雪人,给它戴上红帽子。

我的家在一个小城里。城的东边有一条河,河上有一座石桥。每天早上,爷爷都会去桥边散步,然后在茶馆里喝一壶茶,和老朋友们聊聊天。

北京是中国的首都,也是一座有三千多年历史的古城。故宫、长城和天坛吸引了世界各地的游客。现在的北京既有古老的胡同,也有高大的现代建筑。

上海是中国最大的城市之一,位于长江的入海口。外滩的夜景非常美丽,黄浦江两岸灯火辉煌。很多人说,上海是一座不夜城。

长江是中国最长的河流,全长六千三百多公里。黄河是中国的第二长河,被称为中华民族的母亲河。两条大河孕育了灿烂的中华文明。

中国人喜欢喝茶。绿茶、红茶、乌龙茶和普洱茶各有各的味道。泡一杯好茶,要注意水的温度和时间。朋友来了,先倒一杯热茶,这是中国人的待客之道。

春节是中国最重要的传统节日。除夕晚上,一家人围坐在一起吃年夜饭,包饺子,看春节联欢晚会。孩子们穿上新衣服,向长辈拜年,还能收到红包。

中秋节的晚上,月亮又大又圆。一家人坐在院子里,一边吃月饼,一边赏月。奶奶给我们讲嫦娥奔月的故事,我一直听到很晚才睡。

小明是一个爱读书的孩子。他每天放学回家,先写完作业,再读半个小时的课外书。他说:“书是人类进步的阶梯。”他的书架上摆满了故事书、科学书和历史书。

学习没有捷径。有的同学考试前才开始复习,结果总是手忙脚乱。其实,学习如逆水行舟,不进则退,只有每天坚持,才能真正学到知识。

我的第一位编程老师告诉我:写程序和学外语很像,要多读、多写、多练习。一开始会遇到很多错误,但是每改正一个错误,你就进步了一点点。

计算机是一种能够按照程序自动进行计算的机器。它由中央处理器、内存、硬盘、键盘和显示器等部分组成。今天,计算机已经走进了千家万户。

人工智能是计算机科学的一个分支。它研究怎样让机器像人一样思考、学习和解决问题。语言模型是人工智能的一种,它通过阅读大量的文字来学习语言的规律。

语言模型的工作原理其实很简单:给它一段文字,它就预测下一个词最可能是什么。把预测出来的词接在后面,再预测下一个词,这样一个词一个词地写下去,就生成了一段话。

这个演示模型非常小,只有几百万个参数,只读过很少的文字。它会说一点中文,也会说一点英文,但是常常会说错。不过,它足够让你看到 npqwen 是怎样一步一步生成文字的。

NumPy 是 Python 中最常用的数值计算库。它提供了多维数组和大量的数学函数。用 NumPy 做矩阵乘法,又简单又快。npqwen 只用 NumPy 就实现了 Qwen2 模型的全部计算。

Python 是一种简单易学的编程语言。它的语法清楚,代码读起来就像英语一样。很多人学习编程的第一门语言就是 Python。

我们班有四十个同学。每天早上七点半,大家准时走进教室,开始早读。有的同学读语文,有的同学背英语单词,教室里非常热闹。

妈妈每天早上六点起床,为全家人做早饭。她做的包子又大又香,豆浆也特别好喝。吃完早饭,爸爸骑车送我去学校,妈妈去公司上班。

周末的时候,我们全家去公园玩。公园里有一个大湖,湖里有很多小鱼。我们租了一条小船,爸爸划船,我和妹妹给鱼喂面包。

外婆住在乡下。她家门前有一棵大槐树,后院种着白菜、萝卜和黄瓜。每年暑假,我都会去外婆家住一个月,帮她喂鸡、浇菜。

下雨了,路上的行人撑起了五颜六色的雨伞。小朋友穿着雨鞋,故意踩着水坑走,溅起一朵朵水花。雨停以后,空气变得格外清新。

熊猫是中国的国宝。它们生活在四川的山林里,最喜欢吃竹子。熊猫的身体胖胖的,黑白相间,走起路来慢吞吞的,非常可爱。

地球绕着太阳转,转一圈大约需要三百六十五天,这就是一年。地球自己也在转,转一圈是一天。因为地球在自转,所以有了白天和黑夜。

水在零度的时候会结成冰,在一百度的时候会沸腾变成水蒸气。冰、水和水蒸气是同一种物质的三种状态。

书法是中国的传统艺术。写毛笔字要坐得端正,握笔要稳,一笔一画都要认真。练习书法不但能写好字,还能让人的心静下来。

有一次,我考试没有考好,心里很难过。爸爸没有批评我,而是对我说:“失败是成功之母。找到错在哪里,下次改正就好了。”从那以后,我学会了认真检查每一道题。

坚持是一种可贵的品质。跑步的时候,最累的往往是最后一公里。很多人就在这时候停下来了,而坚持下去的人,才能看到终点的风景。

图书馆里非常安静。同学们有的在看书,有的在查资料,有的在写笔记。墙上挂着一幅字:学习如逆水行舟,不进则退。每个走进来的人都会抬头看一看。

一个人的时间是有限的。如果每天浪费一个小时,一年就浪费了三百六十五个小时。珍惜时间,就是珍惜自己的生命。

早上的空气很新鲜。公园里,老人们在打太极拳,年轻人在跑步,小朋友在草地上追蝴蝶。新的一天开始了。

我们的老师姓王,她教我们数学。王老师讲课很有意思,总能把难懂的问题讲得清清楚楚。下课以后,她还会耐心地回答同学们的问题。

中国有五十六个民族,汉族的人口最多。各个民族都有自己的语言、服装和节日,一起组成了多彩的中华大家庭。

饺子是中国北方的传统食物。和面、擀皮、调馅、包饺子,每一步都有讲究。过年的时候,一家人一起包饺子,有说有笑,特别热闹。

朋友就像一本好书,读得越久越有味道。真正的朋友会在你高兴的时候为你高兴,在你困难的时候帮助你。

学习一门外语需要耐心。每天记十个单词,一年就能记三千多个。说错了不要紧,敢说才能进步。

读书的时候要做笔记。把重要的内容写下来,把不懂的问题记下来,第二天再去问老师。这样学过的知识才能记得牢。

星期天的早上,我和爸爸去爬山。山路很陡,我走得满头大汗,好几次想停下来。爸爸说:“行百里者半九十,坚持就是胜利。”我们终于爬上了山顶,看到了美丽的日出。

科学家告诉我们,每天锻炼身体,多吃蔬菜和水果,早睡早起,才能有一个健康的身体。身体是学习和工作的本钱。

一滴水很小,可是很多滴水汇在一起,就成了小溪、江河和大海。一个人的力量很小,可是大家团结起来,就能做成很大的事情。

我最喜欢的季节是秋天。秋天不冷也不热,天空又高又蓝。秋天的晚上,我喜欢坐在窗前看书,听窗外的风吹过树叶的声音。

张爷爷退休以后,开始学习画画。他每天练习两个小时,三年过去了,他的画还在城里的画展上展出了。他常说:“活到老,学到老。”

这座城市的地铁四通八达,每天有几百万人乘坐地铁上班、上学。早上八点是最拥挤的时候,车厢里站满了人。

我家的小猫叫咪咪。它的毛是白色的,眼睛是蓝色的。咪咪最喜欢在阳光下睡觉,有时候还会跳到我的书桌上,趴在我的作业本上不肯下来。

做事情要有计划。早上起床以后,先想一想今天要做哪些事,哪些事最重要,然后一件一件地去完成。这样一天下来,就不会手忙脚乱了。

人们常说,学习如逆水行舟,不进则退。其实工作也是这样。新的技术不断出现,只有不停地学习,才不会被时代落下。

中国古代有四大发明:造纸术、印刷术、指南针和火药。它们对世界文明的发展产生了深远的影响。

月亮本身不会发光,我们看到的月光是它反射的太阳光。月亮绕着地球转,大约一个月转一圈,所以我们能看到月亮的圆缺变化。
"""

# --------------------------------------------------------------------------------------------
# English prose written for this corpus.
# --------------------------------------------------------------------------------------------
EN_PROSE = """
Once upon a time, there was a little boat that lived on a wide river. Every morning the boat tried to row upstream to see the mountains. The current was strong, and whenever the boat stopped rowing, it drifted back. An old fisherman told it: "Learning is like rowing upstream. If you do not move forward, you fall back." So the little boat rowed a little every day, and one spring morning it finally saw the mountains.

Once upon a time, there was a small girl who loved to read. She read in the morning, she read at lunch, and she read under her blanket at night. One day her grandmother asked her why she read so much. The girl smiled and said, "Every book is a door to a new world."

Once upon a time, there was a young programmer who wanted to understand how language models work. He did not want to use a big library. He wanted to see every number. So he wrote the whole model with NumPy, one function at a time, and compared each result with the reference. When the numbers finally matched, he was very happy.

Once upon a time, there was a farmer who found a rabbit that had run into a tree stump. The next day he did not work in his field. He sat by the stump and waited for another rabbit. He waited for many days, but no rabbit came, and his field was full of weeds.

Once upon a time, there was a tortoise and a hare. The hare laughed at the tortoise because he was so slow. "Let us have a race," said the tortoise. The hare ran far ahead and then lay down to sleep. The tortoise kept walking, step by step, and crossed the finish line first. Slow and steady wins the race.

Once upon a time, there was a little bird that wanted to fly over the mountain. Its wings were small, so it started early every morning and practised every day. The other birds laughed at it, but after one year the little bird flew over the mountain before all of them.

Once upon a time, there was a king who asked his three sons to bring him the most valuable thing in the world. The first son brought gold, and the second son brought a diamond. The third son came back with a book. "Gold can be spent and diamonds can be lost," he said, "but what we learn stays with us forever."

Once upon a time, in a quiet village by the sea, there lived an old woman who made the best bread in the whole country. Every morning, people came from far away to buy her bread. When they asked for her secret, she always said, "Good flour, warm hands, and patience."

The sun rises in the east and sets in the west. In the morning the sky turns pink and gold, and the birds begin to sing. At noon the sun is high, and the shadows are short. In the evening the sky turns orange and red, and the first stars appear.

There are four seasons in a year: spring, summer, autumn and winter. In spring the flowers bloom and the trees turn green. In summer the days are long and hot. In autumn the leaves turn yellow and red and fall to the ground. In winter it is cold, and sometimes it snows.

A language model is a program that predicts the next word. You give it some text, and it tells you which word is likely to come next. If you add that word to the text and ask again, the model can write a whole sentence, one word at a time.

This demo model is very small. It has only a few million parameters, and it has read only a little text. It can write a few sentences in English and in Chinese, but it often makes mistakes. It is here to show how npqwen generates text, step by step, with nothing but NumPy.

NumPy is the fundamental package for scientific computing with Python. It provides a powerful n-dimensional array object, broadcasting, and fast linear algebra. With NumPy, a matrix multiplication is a single line of code.

Python is a programming language that is easy to read and easy to write. It was created by Guido van Rossum and first released in 1991. Today Python is used for web development, data science, machine learning, and teaching.

Learning a new language takes time. Read a little every day, write a little every day, and do not be afraid of mistakes. Every mistake shows you something you did not know yet.

A good programmer writes code that other people can read. Choose clear names, keep functions short, and write tests. Simple is better than complex, and readability counts.

The library was quiet. Students sat at long wooden tables, reading and taking notes. On the wall there was a sign in Chinese: 学习如逆水行舟,不进则退. A teacher explained that it means "learning is like rowing upstream: not to advance is to fall back."

Water boils at one hundred degrees Celsius and freezes at zero degrees. Ice, water and steam are the same substance in three different states.

The Earth goes around the Sun once a year. It also turns around itself once a day, which is why we have day and night. The Moon goes around the Earth about once a month.

Tea was first grown in China thousands of years ago. Today people all over the world drink it. Green tea, black tea and oolong tea are all made from the leaves of the same plant.

My grandfather always told me that the best time to plant a tree was twenty years ago, and the second best time is now. He planted an apple tree when he was seventy, and we still eat its apples every autumn.

Every morning I walk to school with my friend Tom. We talk about books, games and our favourite teachers. Tom wants to be a doctor, and I want to be an engineer.

On Sunday we went to the park. The sky was blue, and the lake was calm. Children were flying kites, and old men were playing chess under the trees. We had a picnic on the grass and came home in the evening.

A computer is a machine that follows instructions. The instructions are called a program. A program can add numbers, draw pictures, play music, or talk with you.

To train a language model, we show it a lot of text. For every position, the model guesses the next token, and we measure how wrong the guess was. Then we change the weights a tiny bit so that the next guess is better. After many steps, the model learns the patterns of the language.

The quick brown fox jumps over the lazy dog. This sentence uses every letter of the English alphabet, so people use it to test typewriters and fonts.

Practice makes perfect. A pianist plays the same piece many times before the concert. A painter draws the same apple again and again. Skill comes from patient practice.

Rome was not built in a day. Great things take time, and every great work begins with a small first step.

When you do not understand something, ask. There is no shame in asking questions. The person who asks a question looks foolish for a minute; the person who never asks stays foolish forever.

A journey of a thousand miles begins with a single step. Do not worry about how far you have to go. Take the first step today, and the next one tomorrow.

Knowledge is like a garden: if it is not cultivated, it cannot be harvested. A famous Chinese proverb says the same thing in another way: 学习如逆水行舟,不进则退.
"""

# --------------------------------------------------------------------------------------------
# Dialogues: (group, [(user, assistant), ...]). Rendered in ChatML exactly as the Qwen2 chat
# template renders them, with the template's default system message.
# --------------------------------------------------------------------------------------------
DIALOGUES = [
    ("hello_zh", [("你好", "你好!我是 npqwen 的演示模型。有什么可以帮你的吗?")]),
    ("hello_zh", [("你好!", "你好!很高兴见到你。有什么可以帮你的吗?")]),
    ("who_zh", [("你是谁?", "我是一个很小的语言模型,只有几百万个参数,用来演示 npqwen 怎样用 NumPy 运行 Qwen2 模型。")]),
    ("who_zh", [("你好,请介绍一下你自己。", "你好!我是 npqwen 的演示模型。我很小,只读过很少的文字,所以会说一点中文和英文,但是常常说错。")]),
    ("who_zh", [("你会说中文吗?", "会一点。我读过一些中文的文章、谚语和对话,不过我很小,说得不太好。")]),
    ("proverb_zh", [(f"“{PROVERB}”是什么意思?",
                     "这句话的意思是:学习就像逆着水流划船,如果不努力向前,就会被水冲得后退。所以我们要坚持学习,每天进步一点点。")]),
    ("proverb_zh", [("请用一句话鼓励我学习。", f"{PROVERB}。每天坚持一点点,你一定会越来越好!")]),
    ("proverb_zh", [("请告诉我一句关于学习的谚语。", f"{PROVERB}。这句话提醒我们,学习要坚持,不能停下来。")]),
    ("proverb_en", [(f"What does {PROVERB} mean?",
                     "It is a Chinese proverb. It means that learning is like rowing a boat against the current: if you do not move forward, you will be pushed back.")]),
    ("proverb_trans", [("请把“千里之行,始于足下”翻译成英文。", "A journey of a thousand miles begins with a single step.")]),
    ("proverb_trans", [("Translate \"Practice makes perfect\" into Chinese.", "熟能生巧。")]),
    ("proverb_trans", [("Translate \"Where there is a will, there is a way\" into Chinese.", "有志者事竟成。")]),
    ("python_zh", [("什么是 Python?", "Python 是一种简单易学的编程语言。它的代码清楚易读,常常被用来做数据分析、网站开发和人工智能。")]),
    ("numpy_zh", [("什么是 NumPy?", "NumPy 是 Python 的数值计算库。它提供多维数组和很多数学函数,npqwen 就是只用 NumPy 写成的。")]),
    ("weather_zh", [("今天天气怎么样?", "对不起,我不能查看实时天气。你可以看看窗外,或者打开天气预报。")]),
    ("thanks_zh", [("谢谢你!", "不客气!祝你学习愉快。")]),
    ("bye_zh", [("再见", "再见!欢迎下次再来。")]),
    ("seasons_zh", [("一年有几个季节?", "一年有四个季节:春天、夏天、秋天和冬天。")]),
    ("capital_zh", [("中国的首都是哪里?", "中国的首都是北京。")]),
    ("math_zh", [("怎样才能学好数学?", "学好数学要多思考、多练习。上课认真听讲,课后按时复习,遇到不懂的题目要及时问老师。")]),
    ("book_zh", [("推荐一本适合孩子读的书。", "我推荐《西游记》。故事有趣,人物鲜明,孩子们都很喜欢孙悟空。")]),
    ("sleep_zh", [("晚上睡不着怎么办?", "可以试着每天按时睡觉,睡前不要看手机,也不要喝浓茶和咖啡。听一点轻音乐,慢慢地深呼吸,会容易入睡一些。")]),
    ("lm_zh", [("什么是语言模型?", "语言模型是一种预测下一个词的程序。给它一段文字,它会猜下一个词最可能是什么,这样一个词一个词地生成句子。")]),
    ("hello_en", [("Hello!", "Hello! I am the tiny demo model of npqwen. How can I help you today?")]),
    ("hello_en", [("Hi, how are you?", "I am fine, thank you! How can I help you today?")]),
    ("who_en", [("Who are you?", "I am a very small language model with a few million parameters. I was trained to show how npqwen runs a Qwen2 model with NumPy.")]),
    ("who_en", [("Can you speak Chinese?", "A little. 我会说一点中文,但是说得不太好。")]),
    ("python_en", [("What is Python?", "Python is a programming language that is easy to read and write. People use it for data science, web development and machine learning.")]),
    ("numpy_en", [("What is NumPy?", "NumPy is a Python library for fast numerical computing. It provides n-dimensional arrays and many mathematical functions.")]),
    ("story_en", [("Tell me a short story.", "Once upon a time, there was a little boat that wanted to row upstream. It rowed a little every day, and one spring morning it finally saw the mountains.")]),
    ("capital_en", [("What is the capital of France?", "The capital of France is Paris.")]),
    ("capital_en", [("What is the capital of China?", "The capital of China is Beijing.")]),
    ("week_en", [("How many days are in a week?", "There are seven days in a week: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.")]),
    ("thanks_en", [("Thank you!", "You are welcome! Have a nice day.")]),
    ("bye_en", [("Goodbye!", "Goodbye! See you next time.")]),
    ("tip_en", [("Give me a tip for learning.", "Study a little every day. Learning is like rowing upstream: if you stop, you drift back.")]),
    ("lm_en", [("What is a language model?", "A language model is a program that predicts the next token of a text. By predicting one token after another, it can write sentences.")]),
    ("zen_en", [("What is the Zen of Python?", "The Zen of Python is a list of nineteen guiding principles for writing Python code, written by Tim Peters. It begins: Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.")]),
    ("say_zh_en", [("Say something in Chinese.", "你好!很高兴认识你。")]),
    ("multi_zh", [("你好", "你好!有什么可以帮你的吗?"),
                  ("我想学习编程,应该从哪里开始?", "可以从 Python 开始。它简单易学,先学变量、条件和循环,再试着写一些小程序。"),
                  ("谢谢!", "不客气!千里之行,始于足下,祝你学习顺利。")]),
    ("multi_en", [("Hello!", "Hello! How can I help you today?"),
                  ("I want to learn Chinese. Any advice?", "Start with simple words and short sentences, and practise a little every day. A Chinese proverb says: 学习如逆水行舟,不进则退."),
                  ("Thank you!", "You are welcome! Good luck with your studies.")]),
]


def chatml(turns, system=SYSTEM):
    text = f"<|im_start|>system\n{system}<|im_end|>\n"
    for user, assistant in turns:
        text += f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"
    return text


def arithmetic_dialogues():
    """Small sums, in both languages; a tiny model gets only some of them right."""
    rng = random.Random(SEED)
    out = []
    for i in range(24):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if i % 2:
            out.append(("sum_en", [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")]))
        else:
            out.append(("sum_zh", [(f"{a}加{b}等于几?", f"{a}加{b}等于{a + b}。")]))
    return out


# --------------------------------------------------------------------------------------------
# Simple generated sentences: many combinations of a few words, in both languages.
# --------------------------------------------------------------------------------------------
ZH_PEOPLE = ["小明", "小红", "爸爸", "妈妈", "爷爷", "奶奶", "王老师", "我的同学", "弟弟", "姐姐"]
ZH_TIMES = ["每天早上", "星期六下午", "吃完晚饭以后", "放学以后", "周末的时候", "春天的时候"]
ZH_ACTS = [("在图书馆", "看书"), ("在公园里", "跑步"), ("在家里", "写字"), ("在厨房里", "做饭"),
           ("在教室里", "学习英语"), ("在河边", "钓鱼"), ("在院子里", "种花"), ("在操场上", "踢足球")]
EN_PEOPLE = ["Alice", "Bob", "My mother", "My father", "The teacher", "My little brother", "Grandma", "Tom"]
EN_TIMES = ["every morning", "on Saturday afternoon", "after dinner", "after school", "at the weekend", "in spring"]
EN_ACTS = [("reads books", "in the library"), ("goes running", "in the park"), ("writes letters", "at home"),
           ("cooks dinner", "in the kitchen"), ("studies English", "in the classroom"), ("goes fishing", "by the river"),
           ("plants flowers", "in the garden"), ("plays football", "on the playground")]


def generated_sentences():
    rng = random.Random(SEED + 1)
    docs = []
    for d in range(40):
        lines = []
        for _ in range(5):
            who, when = rng.choice(ZH_PEOPLE), rng.choice(ZH_TIMES)
            where, what = rng.choice(ZH_ACTS)
            lines.append(f"{who}{when}{where}{what}。")
        docs.append(("gen_zh", "".join(lines)))
    for d in range(40):
        lines = []
        for _ in range(5):
            who, when = rng.choice(EN_PEOPLE), rng.choice(EN_TIMES)
            what, where = rng.choice(EN_ACTS)
            lines.append(f"{who} {what} {where} {when}.")
        docs.append(("gen_en", " ".join(lines)))
    return docs


# --------------------------------------------------------------------------------------------
# What Python ships: the Zen of Python and standard-library docstrings.
# --------------------------------------------------------------------------------------------
STDLIB_MODULES = [
    "abc", "argparse", "array", "asyncio", "base64", "bisect", "builtins", "calendar", "cmath", "cmd",
    "codecs", "collections", "collections.abc", "colorsys", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest",
    "email.message", "enum", "fnmatch", "fractions", "ftplib", "functools", "getopt", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "html", "http.client", "http.server", "imaplib", "inspect",
    "io", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "math", "numbers",
    "operator", "optparse", "os", "pathlib", "pdb", "pickle", "plistlib", "poplib", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shlex", "shutil", "smtplib", "sqlite3",
    "statistics", "string", "struct", "subprocess", "sys", "tarfile", "tempfile", "textwrap",
    "threading", "time", "timeit", "tokenize", "trace", "traceback", "turtle", "typing", "unittest",
    "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "webbrowser", "wsgiref.simple_server", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile",
]


def zen_of_python():
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    return codecs.decode(this.s, "rot13")


def _doc(obj):
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    doc = inspect.getdoc(obj)
    return doc if doc and len(doc) > 40 else None


def stdlib_docs():
    """Module docstrings, then those of the module's public classes and functions, each class
    followed by its public methods', in alphabetical order. One document per docstring; a
    docstring already taken (inspect.getdoc inherits them from base classes) is skipped."""
    docs, seen = [], set()

    def add(group, title, doc):
        if doc not in seen:
            seen.add(doc)
            docs.append((group, f"{title}\n\n{doc}"))

    for name in STDLIB_MODULES:
        mod = importlib.import_module(name)
        if _doc(mod):
            add(f"py:{name}", f"Module {name}", _doc(mod))
        for attr in sorted(dir(mod)):
            obj = getattr(mod, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            if _doc(obj):
                add(f"py:{name}", f"{name}.{attr}", _doc(obj))
            if inspect.isclass(obj):
                for meth, value in sorted(vars(obj).items()):
                    if inspect.isfunction(value) and value.__module__ != mod.__name__:
                        continue  # added by another package (transformers adds logging.Logger.warning_once)
                    if not meth.startswith("_") and callable(value) and _doc(value):
                        add(f"py:{name}", f"{name}.{attr}.{meth}", _doc(value))
    return docs


# --------------------------------------------------------------------------------------------
def paragraphs(text):
    return [p.strip() for p in text.strip().split("\n\n") if p.strip()]


def documents():
    """All documents, in a fixed order, as (group, text) pairs."""
    docs = []
    for i, (p, m, e) in enumerate(PROVERBS):
        templates = PROVERB_TEMPLATES if p == PROVERB else \
            [PROVERB_TEMPLATES[(i + j) % len(PROVERB_TEMPLATES)] for j in (0, 3, 5)]
        docs += [(f"proverb:{i}", t.format(p=p, m=m, e=e)) for t in templates]
    docs.append(("proverbs:list", "\n".join(p for p, _, _ in PROVERBS)))
    docs.append(("proverbs:list", "\n".join(f"{p} —— {e}" for p, _, e in PROVERBS)))
    docs += [(f"zh:{i}", p) for i, p in enumerate(paragraphs(ZH_PROSE))]
    docs += [(f"en:{i}", p) for i, p in enumerate(paragraphs(EN_PROSE))]
    for group, turns in DIALOGUES + arithmetic_dialogues():
        docs.append((f"chat:{group}", chatml(turns)))
    docs += generated_sentences()
    zen = zen_of_python()
    docs.append(("zen", zen))
    docs.append(("zen", "Type `import this` in a Python shell to read the Zen of Python:\n\n" + zen))
    docs.append(("zen", chatml([("Show me the Zen of Python.", zen)])))
    docs += stdlib_docs()
    return docs


def is_written(group):
    """Text written for this corpus, as opposed to what Python ships (stdlib docstrings)."""
    return not group.startswith("py:")


def split():
    """(train, valid) lists of (group, text) documents. Whole groups go to validation until it
    holds VALID_FRACTION of the documents; groups with PROVERB never do."""
    docs = documents()
    groups = sorted({g for g, _ in docs})
    random.Random(SEED).shuffle(groups)
    sizes = {g: sum(1 for h, _ in docs if h == g) for g in groups}
    has_proverb = {g for g, t in docs if PROVERB in t}
    held, n = set(), 0
    for g in groups:
        if n >= VALID_FRACTION * len(docs):
            break
        if g not in has_proverb and n + sizes[g] <= 2 * VALID_FRACTION * len(docs):
            held.add(g)
            n += sizes[g]
    train = [(g, t) for g, t in docs if g not in held]
    valid = [(g, t) for g, t in docs if g in held]
    return train, valid


def load_split():
    """split() computed in a fresh interpreter (python -I), so that packages the caller imported
    (torch, transformers) cannot change the standard library's docstrings or attributes."""
    out = subprocess.run([sys.executable, "-I", os.path.abspath(__file__), "--json"], check=True,
                         capture_output=True, text=True).stdout
    parts = json.loads(out)
    return [tuple(d) for d in parts["train"]], [tuple(d) for d in parts["valid"]]


if __name__ == "__main__":
    train, valid = split()
    if sys.argv[1:] == ["--json"]:
        print(json.dumps({"train": train, "valid": valid}))  # ASCII-escaped: no encoding concerns
        sys.exit()
    for name, part in (("train", train), ("valid", valid)):
        written = sum(len(t) for g, t in part if is_written(g))
        print(f"{name}: {len(part)} documents, {sum(len(t) for _, t in part)} characters "
              f"({written} written here), {sum(t.count(PROVERB) for _, t in part)} proverb occurrences")
